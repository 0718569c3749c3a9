#include "tools/kvctl/format.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>

namespace kvctl {

std::string FormatLimit(std::uint64_t limit) {
  return limit == ~std::uint64_t{0} ? "none" : FormatBytes(limit);
}

std::string FormatAge(double seconds) {
  if (!(seconds >= 0)) return "-";
  if (seconds < 10) return fmt::format("{:.1f}s", seconds);
  const auto s = static_cast<std::uint64_t>(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  return fmt::format("{}d{:02}h", s / 86400, (s / 3600) % 24);
}

std::string FormatMicros(std::optional<double> micros) {
  if (!micros || !(*micros >= 0)) return "-";
  if (*micros < 10) return fmt::format("{:.1f}us", *micros);
  if (*micros < 1000) return fmt::format("{:.0f}us", *micros);
  return fmt::format("{:.2f}ms", *micros / 1000.0);
}

std::string Printable(std::string_view text) {
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '\\') {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string Bar(std::uint64_t in_use, std::uint64_t reserved, std::uint64_t total, int width) {
  if (width <= 0) return {};
  std::string bar(static_cast<std::size_t>(width), '.');
  if (total == 0) return bar;
  auto cells = [&](std::uint64_t v) {
    const double frac = std::min(1.0, static_cast<double>(v) / static_cast<double>(total));
    return static_cast<int>(std::lround(frac * width));
  };
  const int used = cells(in_use);
  const int held = std::min(width, cells(in_use + reserved));
  for (int i = 0; i < held; ++i) bar[static_cast<std::size_t>(i)] = i < used ? '#' : '+';
  return bar;
}

Table::Table(std::vector<std::string> header, std::vector<bool> right_aligned)
    : right_(std::move(right_aligned)) {
  rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> cells) {
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<std::size_t> widths;
  for (const auto& row : rows_) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const bool right = i < right_.size() && right_[i];
      const std::size_t pad = widths[i] - row[i].size();
      if (i > 0) line += "  ";
      if (right) line.append(pad, ' ');
      line += row[i];
      if (!right && i + 1 < row.size()) line.append(pad, ' ');
    }
    out << line << '\n';
  }
}

}  // namespace kvctl
