#include "tests/fakecuda/fake_faults.h"

#include <charconv>
#include <cstdio>

#include "tests/fakecuda/fake_errors.h"
#include "tests/fakecuda/fakecuda.h"

namespace fakecuda {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      parts.push_back(Trim(s.substr(start, i - start)));
      start = i + 1;
    }
  }
  return parts;
}

bool ParseEntry(std::string_view entry, const State& s, Fault* f, std::string* why) {
  const std::vector<std::string_view> parts = Split(entry, ':');
  if (parts.size() < 2 || parts.size() > 3) {
    *why = "expected fn:N, fn:N+, fn:N:ERRNAME or fn:N+:ERRNAME";
    return false;
  }
  const std::optional<Fn> fn = FnFromName(parts[0]);
  if (!fn) {
    *why = "'" + std::string(parts[0]) + "' is not a driver function the fake implements";
    return false;
  }
  std::string_view count = parts[1];
  f->and_later = !count.empty() && count.back() == '+';
  if (f->and_later) {
    count.remove_suffix(1);
  }
  const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), f->nth);
  if (ec != std::errc() || end != count.data() + count.size() || f->nth == 0) {
    *why = "the call number must be a whole number >= 1, optionally followed by '+'";
    return false;
  }
  f->error = CUDA_ERROR_UNKNOWN;
  if (parts.size() == 3) {
    const std::optional<CUresult> err = ResultFromName(parts[2]);
    if (!err || *err == CUDA_SUCCESS) {
      *why = "'" + std::string(parts[2]) + "' is not a CUresult error name (e.g. " +
             "CUDA_ERROR_OUT_OF_MEMORY)";
      return false;
    }
    f->error = *err;
  }
  f->fn = *fn;
  f->base = s.calls.at(static_cast<std::size_t>(*fn));
  return true;
}

}  // namespace

bool ParseFaults(std::string_view spec, const State& s, std::vector<Fault>* out,
                 std::string* error) {
  out->clear();
  if (Trim(spec).empty()) {
    return true;
  }
  for (std::string_view entry : Split(spec, ',')) {
    Fault f;
    std::string why;
    if (!ParseEntry(entry, s, &f, &why)) {
      *error = "fakecuda: bad fault spec entry '" + std::string(entry) + "' in '" +
               std::string(spec) + "': " + why + "; the whole spec is ignored";
      out->clear();
      return false;
    }
    out->push_back(f);
  }
  return true;
}

}  // namespace fakecuda

extern "C" {

__attribute__((visibility("default"))) int fakecuda_set_faults(const char* spec) {
  using fakecuda::S;
  fakecuda::State& s = S();
  const std::lock_guard<std::mutex> lock(s.mu);
  std::vector<fakecuda::Fault> faults;
  std::string error;
  if (!fakecuda::ParseFaults(spec != nullptr ? spec : "", s, &faults, &error)) {
    fakecuda::ReportOnce(error);
    return -1;
  }
  s.faults = std::move(faults);
  return 0;
}

__attribute__((visibility("default"))) void fakecuda_clear_faults(void) {
  fakecuda::State& s = fakecuda::S();
  const std::lock_guard<std::mutex> lock(s.mu);
  s.faults.clear();
}

__attribute__((visibility("default"))) uint64_t fakecuda_call_count(const char* fn) {
  if (fn == nullptr) {
    return 0;
  }
  const std::optional<fakecuda::Fn> id = fakecuda::FnFromName(fn);
  if (!id) {
    return 0;
  }
  fakecuda::State& s = fakecuda::S();
  const std::lock_guard<std::mutex> lock(s.mu);
  return s.calls.at(static_cast<std::size_t>(*id));
}

}  // extern "C"
