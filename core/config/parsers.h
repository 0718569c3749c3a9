// Strict value parsers shared by the config loader (private to core/config; the public ones are
// in config.h). Every parser returns nullopt on anything it does not fully understand: a value
// that is only half right must be refused, never silently read as something else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kvcached::config_detail {

// Leading and trailing ASCII whitespace removed (values pasted into YAML often carry some).
std::string_view Trim(std::string_view text);
// Plain decimal digits only: no sign, no spaces inside, no hex, no overflow.
std::optional<std::uint64_t> ParseUnsigned(std::string_view text);
// A plain decimal number such as "0.9", ".5" or "1" (no exponent, no inf/nan, no sign).
std::optional<double> ParseDecimal(std::string_view text);
// An octal permission mode such as "0600", "600" or "0o640"; at most 4 octal digits.
std::optional<std::uint32_t> ParseOctalMode(std::string_view text);
// Up to 63 printable ASCII characters; longer is truncated, anything else becomes '_'.
std::string SanitizeLabel(std::string_view raw);
// The value as it should appear inside an error message: quoted, control characters escaped,
// long values shortened, so that a hostile value cannot forge log lines.
std::string QuoteValue(std::string_view value);

}  // namespace kvcached::config_detail
