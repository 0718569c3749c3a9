// NoDestructor<T>: a T built on first use and never destroyed. The fakes keep their state in
// these so that calls made during process exit (leak checks, late frees from other libraries'
// destructors) still find it intact.
#pragma once

#include <new>
#include <utility>

namespace fakecuda {

template <class T>
class NoDestructor {
 public:
  template <class... Args>
  explicit NoDestructor(Args&&... args) {
    ::new (static_cast<void*>(storage_)) T(std::forward<Args>(args)...);
  }
  NoDestructor(const NoDestructor&) = delete;
  NoDestructor& operator=(const NoDestructor&) = delete;
  ~NoDestructor() = default;  // deliberately leaves *get() alive

  T* get() { return std::launder(reinterpret_cast<T*>(storage_)); }
  T& operator*() { return *get(); }
  T* operator->() { return get(); }

 private:
  alignas(T) unsigned char storage_[sizeof(T)];
};

}  // namespace fakecuda
