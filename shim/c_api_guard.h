// What every C API entry point shares: the calling thread's last error, and the guard that keeps
// C++ exceptions from crossing the C ABI. Header-only so that the unit tests check the mapping.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <utility>

#include "kvcached/kvcached.h"

namespace kvcached::shim {

// kvcached_last_error() of this thread.
inline thread_local std::string t_last_error;

inline kvcached_status Fail(kvcached_status status, std::string message) {
  t_last_error = std::move(message);
  return status;
}

// Runs body() (returning kvcached_status) and turns whatever it throws into a status: out of
// host memory is KVCACHED_ERR_NO_MEMORY (the caller may retry later); anything else is a bug or
// an unexpected failure inside kvcached, KVCACHED_ERR_INTERNAL, with what() in the last error.
template <class Body>
kvcached_status GuardCall(const char* function, Body&& body) noexcept {
  try {
    return std::forward<Body>(body)();
  } catch (const std::bad_alloc&) {
    return Fail(KVCACHED_ERR_NO_MEMORY, std::string(function) + ": out of host memory");
  } catch (const std::exception& e) {
    return Fail(KVCACHED_ERR_INTERNAL,
                std::string(function) + ": internal error in kvcached: " + e.what() +
                    " (please report it; the engine may continue without this call)");
  } catch (...) {
    return Fail(KVCACHED_ERR_INTERNAL,
                std::string(function) + ": internal error in kvcached (unknown exception)");
  }
}

}  // namespace kvcached::shim
