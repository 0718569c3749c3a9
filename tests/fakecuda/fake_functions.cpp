#include "tests/fakecuda/fake_functions.h"

#include <array>
#include <cctype>

namespace fakecuda {
namespace {

constexpr std::array<std::string_view, kFnCount> kNames = {
#define FAKECUDA_NAME(fn) #fn,
    FAKECUDA_FUNCTIONS(FAKECUDA_NAME)
#undef FAKECUDA_NAME
};

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Strips the suffixes that name variants of one function: _ptds/_ptsz, then _vN.
std::string_view BaseName(std::string_view name) {
  for (std::string_view per_thread : {"_ptds", "_ptsz"}) {
    if (EndsWith(name, per_thread)) {
      name.remove_suffix(per_thread.size());
      break;
    }
  }
  const std::size_t v = name.rfind("_v");
  if (v != std::string_view::npos && v + 2 < name.size()) {
    bool digits = true;
    for (char c : name.substr(v + 2)) {
      digits = digits && std::isdigit(static_cast<unsigned char>(c)) != 0;
    }
    if (digits) {
      name = name.substr(0, v);
    }
  }
  return name;
}

}  // namespace

std::string_view FnName(Fn fn) {
  return kNames.at(static_cast<std::size_t>(fn));
}

std::optional<Fn> FnFromName(std::string_view name) {
  const std::string_view base = BaseName(name);
  for (std::size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == base) {
      return static_cast<Fn>(i);
    }
  }
  return std::nullopt;
}

}  // namespace fakecuda
