#include "core/pool/background_worker.h"

#include <pthread.h>

namespace kvcached {

void BackgroundWorker::Start(std::string name, std::chrono::milliseconds period, Fn on_start,
                             Fn pass) {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stop_) return;
  period_ = period;
  pass_ = std::move(pass);
  running_.store(true, std::memory_order_release);
  thread_ = std::thread(
      [this, name = std::move(name), on_start = std::move(on_start)] { Loop(name, on_start); });
}

void BackgroundWorker::Loop(const std::string& name, const Fn& on_start) {
  // Thread names are limited to 15 characters; a failure only affects ps/top output.
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  if (on_start) on_start();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, period_, [this] { return wake_ || stop_; });
    if (stop_) break;
    wake_ = false;
    wake_pending_.store(false, std::memory_order_release);
    lock.unlock();
    pass_();
    passes_.fetch_add(1, std::memory_order_acq_rel);
    lock.lock();
  }
}

void BackgroundWorker::Wake() {
  if (!running() || wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_one();
}

void BackgroundWorker::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  running_.store(false, std::memory_order_release);
}

}  // namespace kvcached
