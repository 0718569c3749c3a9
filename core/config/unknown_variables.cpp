#include "core/config/unknown_variables.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string_view>

#include "core/config/config.h"

extern char** environ;  // NOLINT: POSIX

namespace kvcached {
namespace {

char Upper(char c) {
  return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
}

std::string UpperCopy(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = Upper(c);
  return out;
}

// Names come from the environment, which another user may have written: keep a log line one line.
std::string Printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 80)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u >= 0x20 && u < 0x7f) ? c : '?';
  }
  if (text.size() > 80) out += "...";
  return out;
}

// Near misses are judged within this many edits; suggestions may be a little further off
// (KVCACHED_PAGE_SIZE -> KVCACHED_PAGE_SIZE_MB is three).
constexpr std::size_t kNearMiss = 2;

std::size_t SuggestionReach(std::string_view known) {
  return std::max<std::size_t>(3, known.size() / 5);
}

}  // namespace

std::size_t VariableNameDistance(const std::string& a_raw, const std::string& b_raw) {
  const std::string a = UpperCopy(a_raw);
  const std::string b = UpperCopy(b_raw);
  // Optimal string alignment: Levenshtein plus adjacent transpositions, three rows.
  std::vector<std::size_t> prev2(b.size() + 1);
  std::vector<std::size_t> prev(b.size() + 1);
  std::vector<std::size_t> cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    prev2.swap(prev);
    prev.swap(cur);
  }
  return prev[b.size()];
}

std::vector<UnknownVariable> FindUnknownVariables(const std::vector<std::string>& names) {
  std::vector<UnknownVariable> out;
  for (const std::string& name : names) {
    if (name.empty() || FindConfigVariable(name) != nullptr) continue;
    const bool prefixed = UpperCopy(name).rfind("KVCACHE", 0) == 0;
    const ConfigVarDoc* closest = nullptr;
    auto best = static_cast<std::size_t>(-1);
    for (const ConfigVarDoc& doc : ConfigVariables()) {
      const std::size_t known = std::strlen(doc.name);
      // Lengths alone bound the distance: skip the work for names that cannot be close.
      const std::size_t gap = known > name.size() ? known - name.size() : name.size() - known;
      if (gap > SuggestionReach(doc.name)) continue;
      const std::size_t d = VariableNameDistance(name, doc.name);
      if (d < best) {
        best = d;
        closest = &doc;
      }
    }
    const bool near = closest != nullptr && best <= kNearMiss;
    if (!prefixed && !near) continue;
    UnknownVariable unknown{name, {}};
    if (closest != nullptr && best <= SuggestionReach(closest->name)) {
      unknown.suggestion = closest->name;
    }
    out.push_back(std::move(unknown));
  }
  return out;
}

std::vector<std::string> EnvironmentNames() {
  std::vector<std::string> names;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    names.emplace_back(text.substr(0, text.find('=')));
  }
  return names;
}

std::string DescribeUnknown(const UnknownVariable& unknown) {
  std::string line = Printable(unknown.name) + " is not a kvcached variable and is ignored";
  if (!unknown.suggestion.empty()) {
    line += "; did you mean " + unknown.suggestion + "?";
    if (UpperCopy(unknown.name) == unknown.suggestion) line += " (names are case-sensitive)";
  }
  line += " (docs/configuration.md lists every variable)";
  return line;
}

}  // namespace kvcached
