# Debian package of the shim: include(packaging/cpack.cmake) from the top-level CMakeLists.txt
# after the targets are defined, then `cmake --build build --target package` (or `cd build &&
# cpack -G DEB`) writes build/kvcached-shim_<version>_<arch>.deb.
#
# Installed layout (the Docker image uses the same):
#   /usr/lib/kvcached/libkvcached_shim.so     the preloaded library
#   /usr/lib/kvcached/kvcached_python/        the engine hook, next to the library
#   /usr/bin/kvctl
#   /usr/share/doc/kvcached/                  operator documentation
#   /usr/include/kvcached/kvcached.h          the C API (for programs that call it directly)
#   /usr/lib/cmake/kvcached/, /usr/lib/pkgconfig/kvcached.pc   for programs that link the C API
# Nothing is preloaded system-wide: operators opt in per engine with LD_PRELOAD.

include("${CMAKE_CURRENT_LIST_DIR}/install.cmake")   # the install() rules (layout above)

set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "kvcached-shim")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_VENDOR "kvcached shim project")
set(CPACK_PACKAGE_CONTACT "kvcached shim maintainers <maintainers@example.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Elastic KV-cache memory for LLM engines on shared GPUs (LD_PRELOAD shim and kvctl)")
set(CPACK_PACKAGE_DESCRIPTION
    "libkvcached_shim.so is preloaded into an LLM serving engine (LD_PRELOAD) and turns its \
KV-cache GPU allocations into reserved virtual memory that is backed page by page as the engine \
uses it, so that several engines share one GPU through one budget kept in shared memory. kvctl \
lists, watches and limits the engines on each GPU. The library needs the NVIDIA driver at run \
time (it opens libcuda.so.1 itself) and links no CUDA library.")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_DEBIAN_FILE_NAME "DEB-DEFAULT")
set(CPACK_DEBIAN_PACKAGE_SECTION "utils")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# Library dependencies (libc, ncurses for kvtop) are computed from the binaries.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The driver is not a package dependency: hosts install it in many ways (.run, DKMS, containers).
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "nvidia-driver | nvidia-tesla-driver")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
