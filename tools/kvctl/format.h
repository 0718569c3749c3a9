// Formatting shared by the kvctl commands: byte sizes, ages, bars, escaped text, plain tables.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "core/common/format_bytes.h"

namespace kvctl {

// "0 B", "512 KiB", "1.5 GiB": the core's formatter, so that kvctl and the shim's messages say
// sizes alike.
using kvcached::FormatBytes;
// "none" for no limit, else FormatBytes.
std::string FormatLimit(std::uint64_t limit);
// "0.4s", "12s", "3m02s", "2h05m"; "-" for negative/unknown.
std::string FormatAge(double seconds);
// "3.2us", "41us", "1.20ms" for a mean hook time per step; "-" when unknown.
std::string FormatMicros(std::optional<double> micros);
// Text from a segment, made safe for a terminal: control and non-ASCII bytes become \xNN.
std::string Printable(std::string_view text);
// A bar of `width` cells: '#' for in_use, '+' for reserved, '.' for the rest of `total`.
std::string Bar(std::uint64_t in_use, std::uint64_t reserved, std::uint64_t total, int width);

// Columns padded to their widest cell; `right_aligned[i]` right-aligns column i.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right_aligned);
  void AddRow(std::vector<std::string> cells);
  void Print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
  std::vector<bool> right_;
};

}  // namespace kvctl
