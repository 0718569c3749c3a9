// Value parsers for the environment: sizes, booleans, integers, decimals, octal modes, and the
// sanitisers for names that end up in /dev/shm or in the shared ledger.
#include "core/config/parsers.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>

#include "core/config/config.h"

namespace kvcached {
namespace config_detail {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsIpcNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || IsDigit(c) || c == '_' || c == '.' ||
         c == '-';
}

// Multiplier of a size unit (binary: 1K = 1024), or 0 when the unit is unknown.
std::uint64_t UnitMultiplier(std::string_view unit) {
  const std::string u = Lower(unit);
  struct Unit {
    std::array<const char*, 3> names;
    unsigned shift;
  };
  static constexpr std::array<Unit, 6> kUnits = {{
      {{"", "b", "b"}, 0},
      {{"k", "kb", "kib"}, 10},
      {{"m", "mb", "mib"}, 20},
      {{"g", "gb", "gib"}, 30},
      {{"t", "tb", "tib"}, 40},
      {{"p", "pb", "pib"}, 50},
  }};
  for (const Unit& entry : kUnits) {
    for (const char* name : entry.names) {
      if (u == name) return std::uint64_t{1} << entry.shift;
    }
  }
  return 0;
}

}  // namespace

std::string_view Trim(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

std::optional<std::uint64_t> ParseUnsigned(std::string_view text) {
  if (text.empty()) return std::nullopt;
  for (char c : text) {
    if (!IsDigit(c)) return std::nullopt;  // rejects signs, spaces, hex, trailing garbage
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;  // overflow
  return value;
}

std::optional<double> ParseDecimal(std::string_view text) {
  // Checked by hand first: from_chars would also take exponents, "inf" and "nan".
  bool seen_dot = false;
  bool seen_digit = false;
  for (char c : text) {
    if (IsDigit(c)) {
      seen_digit = true;
    } else if (c == '.' && !seen_dot) {
      seen_dot = true;
    } else {
      return std::nullopt;
    }
  }
  if (!seen_digit) return std::nullopt;
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<std::uint32_t> ParseOctalMode(std::string_view text) {
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'o' || text[1] == 'O'))
    text.remove_prefix(2);
  if (text.empty() || text.size() > 6) return std::nullopt;
  std::uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    value = value * 8U + static_cast<std::uint32_t>(c - '0');
  }
  return value;
}

std::string SanitizeLabel(std::string_view raw) {
  // The ledger slot holds 63 characters plus NUL, and kvctl prints the label to terminals.
  constexpr std::size_t kMaxLabel = 63;
  std::string out;
  out.reserve(std::min(raw.size(), kMaxLabel));
  for (char c : raw.substr(0, kMaxLabel)) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '_');
  }
  return out;
}

std::string QuoteValue(std::string_view value) {
  constexpr std::size_t kMaxShown = 80;
  const bool shortened = value.size() > kMaxShown;
  if (shortened) value = value.substr(0, kMaxShown);
  std::string out = "\"";
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u >= 0x7f) {
      std::array<char, 5> hex{};
      std::snprintf(hex.data(), hex.size(), "\\x%02x", u);
      out += hex.data();
    } else {
      out.push_back(c);
    }
  }
  out += shortened ? "...\"" : "\"";
  return out;
}

}  // namespace config_detail

std::optional<std::uint64_t> ParseSize(const std::string& text) {
  using config_detail::Trim;
  const std::string_view s = Trim(text);
  std::size_t i = 0;
  std::string_view whole;
  std::string_view frac;
  const std::size_t whole_begin = i;
  while (i < s.size() && config_detail::IsDigit(s[i])) ++i;
  whole = s.substr(whole_begin, i - whole_begin);
  if (i < s.size() && s[i] == '.') {
    const std::size_t frac_begin = ++i;
    while (i < s.size() && config_detail::IsDigit(s[i])) ++i;
    frac = s.substr(frac_begin, i - frac_begin);
  }
  if (whole.empty() && frac.empty()) return std::nullopt;
  while (i < s.size() && config_detail::IsSpace(s[i])) ++i;  // "8 GiB" is fine
  const std::uint64_t mult = config_detail::UnitMultiplier(s.substr(i));
  if (mult == 0) return std::nullopt;

  std::uint64_t value = 0;
  if (!whole.empty()) {
    const auto parsed = config_detail::ParseUnsigned(whole);
    if (!parsed || __builtin_mul_overflow(*parsed, mult, &value)) return std::nullopt;
  }
  // The fraction is applied exactly in integer arithmetic (floor to whole bytes); a fraction of
  // a byte is refused rather than rounded away.
  constexpr std::size_t kMaxFracDigits = 18;
  const std::string_view used = frac.substr(0, std::min(frac.size(), kMaxFracDigits));
  __extension__ using U128 = unsigned __int128;  // mult (up to 2^50) x 18 digits needs 110 bits
  U128 numerator = 0;
  U128 denominator = 1;
  for (char c : used) {
    numerator = numerator * 10 + static_cast<unsigned>(c - '0');
    denominator *= 10;
  }
  const U128 frac_bytes_scaled = numerator * mult;
  if (frac_bytes_scaled % denominator != 0 && mult == 1) return std::nullopt;
  for (char c : frac.substr(used.size())) {
    if (c != '0' && mult == 1) return std::nullopt;
  }
  const auto frac_bytes = static_cast<std::uint64_t>(frac_bytes_scaled / denominator);
  if (__builtin_add_overflow(value, frac_bytes, &value)) return std::nullopt;
  return value;
}

std::optional<bool> ParseBool(const std::string& text) {
  const std::string v = config_detail::Lower(config_detail::Trim(text));
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  return std::nullopt;
}

std::optional<VirtualMemInfo> ParseVirtualMemInfo(const std::string& text) {
  const std::string v = config_detail::Lower(config_detail::Trim(text));
  if (v == "process") return VirtualMemInfo::kProcess;
  if (v == "shared") return VirtualMemInfo::kShared;
  if (v == "real") return VirtualMemInfo::kReal;
  const auto on = ParseBool(v);
  if (!on) return std::nullopt;
  return *on ? VirtualMemInfo::kProcess : VirtualMemInfo::kReal;
}

std::string SanitizeIpcName(const std::string& raw) {
  constexpr std::size_t kMaxIpcName = 64;
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    char mapped = config_detail::IsIpcNameChar(c) ? c : '_';
    // No leading dot (hidden file, "." or ".."), and no ".." anywhere so that nothing that
    // looks like a parent-directory step can ever be formed from the name.
    if (mapped == '.') {
      if (out.empty()) continue;
      if (out.back() == '.') mapped = '_';
    }
    out.push_back(mapped);
    if (out.size() == kMaxIpcName) break;
  }
  return out;
}

}  // namespace kvcached
