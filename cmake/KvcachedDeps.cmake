# Third-party dependencies, all from Debian packages (see scripts/install-deps.sh).
# Only CUDA *headers* are used: the shim dlopens the driver at run time.
find_path(KVCACHED_CUDA_INCLUDE cuda.h
  HINTS ${CUDAToolkit_ROOT}/include $ENV{CUDA_HOME}/include /usr/local/cuda/include
  REQUIRED)
find_package(Threads REQUIRED)
find_package(Boost 1.74 REQUIRED)                         # header-only: Boost.Interprocess
find_path(KVCACHED_SPDLOG_INCLUDE spdlog/spdlog.h REQUIRED)
find_path(KVCACHED_FMT_INCLUDE fmt/format.h REQUIRED)

# spdlog and fmt are compiled into our own binaries (spdlog header-only in core/log only, fmt's
# out-of-line part once in core/log/fmt_compiled.cpp) so that the preloaded library drags no
# shared libspdlog/libfmt into the host process.
add_library(kvcached_thirdparty INTERFACE)
target_include_directories(kvcached_thirdparty SYSTEM INTERFACE
  ${KVCACHED_CUDA_INCLUDE} ${Boost_INCLUDE_DIRS} ${KVCACHED_SPDLOG_INCLUDE} ${KVCACHED_FMT_INCLUDE})
target_compile_definitions(kvcached_thirdparty INTERFACE
  SPDLOG_HEADER_ONLY SPDLOG_FMT_EXTERNAL)
target_link_libraries(kvcached_thirdparty INTERFACE Threads::Threads ${CMAKE_DL_LIBS} rt)

# Warnings for our own code.
add_library(kvcached_warnings INTERFACE)
target_compile_options(kvcached_warnings INTERFACE -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)

# GPU test/bench support: needs nvcc (not a GPU) to build.
set(KVCACHED_HAVE_CUDA_COMPILER OFF)
if(NOT KVCACHED_GPU STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # CMake 3.25 does not know nvcc's C++20 flag; CUDA targets inherit C++20 from the project.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    enable_language(CUDA)
    set(CMAKE_CUDA_ARCHITECTURES 90)
    set(KVCACHED_HAVE_CUDA_COMPILER ON)
  elseif(KVCACHED_GPU STREQUAL "ON")
    message(FATAL_ERROR "KVCACHED_GPU=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()
