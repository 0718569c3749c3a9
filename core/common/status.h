// Status and Result: how the core reports failure without exceptions, so that every error can
// cross the C ABI as a kvcached_status plus a message naming its cause.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace kvcached {

enum class Errc {
  kOk = 0,
  kInvalid,      // bad argument
  kNoMemory,     // budget refused or driver out of memory: a recoverable "not now"
  kDriver,       // any other driver failure
  kNotFound,     // unknown address/region
  kDisabled,     // shim disabled or failed to start
  kState,        // operation not valid in the current state
  kUnsupported,  // e.g. no VMM support on the device
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Errc code, std::string message, int driver_code = 0)
      : code_(code), driver_code_(driver_code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  [[nodiscard]] bool ok() const { return code_ == Errc::kOk; }
  [[nodiscard]] Errc code() const { return code_; }
  // The CUresult behind a kDriver/kNoMemory error, 0 otherwise.
  [[nodiscard]] int driver_code() const { return driver_code_; }
  [[nodiscard]] const std::string& message() const { return message_; }

 private:
  Errc code_ = Errc::kOk;
  int driver_code_ = 0;
  std::string message_;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const { return std::holds_alternative<T>(v_); }
  [[nodiscard]] T& value() & { return std::get<T>(v_); }
  [[nodiscard]] T&& value() && { return std::get<T>(std::move(v_)); }
  [[nodiscard]] const T& value() const& { return std::get<T>(v_); }
  [[nodiscard]] Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kvcached

// Propagate a failed Status from an expression returning Status.
#define KVC_RETURN_IF_ERROR(expr)        \
  do {                                   \
    ::kvcached::Status kvc_st_ = (expr); \
    if (!kvc_st_.ok()) return kvc_st_;   \
  } while (0)
