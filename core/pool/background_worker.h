// BackgroundWorker: one named thread that runs a maintenance pass whenever it is woken and at
// least once per period. It sleeps on a condition variable in between (no busy polling), and
// waking it is cheap when a wake is already pending (one atomic exchange, no syscall).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace kvcached {

class BackgroundWorker {
 public:
  using Fn = std::function<void()>;

  BackgroundWorker() = default;
  BackgroundWorker(const BackgroundWorker&) = delete;
  BackgroundWorker& operator=(const BackgroundWorker&) = delete;
  BackgroundWorker(BackgroundWorker&&) = delete;
  BackgroundWorker& operator=(BackgroundWorker&&) = delete;
  ~BackgroundWorker() { Stop(); }

  // Starts the thread once (later calls do nothing): it runs on_start, then `pass` on every wake
  // and at least every `period`.
  void Start(std::string name, std::chrono::milliseconds period, Fn on_start, Fn pass);
  void Wake();
  // Joins the thread (a pass in progress completes first). Idempotent.
  void Stop();
  [[nodiscard]] bool running() const { return running_.load(std::memory_order_acquire); }
  // Passes completed so far (lets tests wait for "the worker has looked").
  [[nodiscard]] std::uint64_t passes() const { return passes_.load(std::memory_order_acquire); }

 private:
  void Loop(const std::string& name, const Fn& on_start);

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;
  bool stop_ = false;
  std::atomic<bool> wake_pending_{false};
  std::atomic<bool> running_{false};
  std::atomic<std::uint64_t> passes_{0};
  std::chrono::milliseconds period_{20};
  Fn pass_;
  std::thread thread_;
};

}  // namespace kvcached
