# install() rules: `cmake --install build [--prefix P]` and the .deb (cpack.cmake) use the same
# layout, relative to the prefix (/usr in the .deb):
#   lib/kvcached/libkvcached_shim.so          the preloaded library (also the C API's library)
#   lib/kvcached/kvcached_python/             the engine hook, next to the library (byte-compiled)
#   bin/kvctl                                 (installed by tools/kvctl/CMakeLists.txt)
#   include/kvcached/kvcached.h               the C API
#   lib/cmake/kvcached/                       find_package(kvcached CONFIG) -> kvcached::shim
#   lib/pkgconfig/kvcached.pc                 pkg-config --cflags --libs kvcached
#   share/doc/kvcached/                       operator documentation and the launch example
# lib/kvcached is a private folder (not on the loader's path): programs that link the C API get
# an RPATH to it from the CMake package or the .pc file. Nothing is preloaded system-wide.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

get_filename_component(KVCACHED_SOURCE_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(KVCACHED_INSTALL_LIBDIR lib/kvcached)

if(TARGET kvcached_shim)
  # The export name gives consumers kvcached::shim; the header folder becomes its include path.
  set_target_properties(kvcached_shim PROPERTIES EXPORT_NAME shim)
  install(TARGETS kvcached_shim EXPORT kvcachedTargets
          LIBRARY DESTINATION ${KVCACHED_INSTALL_LIBDIR} COMPONENT runtime
          INCLUDES DESTINATION include)
  install(EXPORT kvcachedTargets NAMESPACE kvcached:: DESTINATION lib/cmake/kvcached
          COMPONENT runtime)
  configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/cmake/kvcachedConfig.cmake.in"
    "${CMAKE_BINARY_DIR}/packaging/kvcachedConfig.cmake" INSTALL_DESTINATION lib/cmake/kvcached)
  write_basic_package_version_file("${CMAKE_BINARY_DIR}/packaging/kvcachedConfigVersion.cmake"
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
  install(FILES "${CMAKE_BINARY_DIR}/packaging/kvcachedConfig.cmake"
                "${CMAKE_BINARY_DIR}/packaging/kvcachedConfigVersion.cmake"
          DESTINATION lib/cmake/kvcached COMPONENT runtime)
  # The .pc file names absolute paths, so it is written at install time, when the prefix is
  # known (cpack installs with prefix /usr into a staging folder: DESTDIR).
  install(CODE "
    set(KVCACHED_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    set(KVCACHED_PC_VERSION \"${PROJECT_VERSION}\")
    configure_file(\"${CMAKE_CURRENT_LIST_DIR}/pkgconfig/kvcached.pc.in\"
                   \"${CMAKE_BINARY_DIR}/packaging/pc/kvcached.pc\" @ONLY)
    file(INSTALL \"${CMAKE_BINARY_DIR}/packaging/pc/kvcached.pc\"
         DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/pkgconfig\")
  " COMPONENT runtime)
endif()

# The engine hook as built (shim/kvcached_python.cmake): sources plus their byte-compiled files,
# so that no interpreter ever writes a __pycache__ into the installed (root-owned) folder.
if(TARGET kvcached_python)
  install(DIRECTORY "${CMAKE_LIBRARY_OUTPUT_DIRECTORY}/kvcached_python/"
          DESTINATION ${KVCACHED_INSTALL_LIBDIR}/kvcached_python COMPONENT runtime
          FILES_MATCHING PATTERN "*.py" PATTERN "*.pyc")
endif()
install(FILES "${KVCACHED_SOURCE_ROOT}/include/kvcached/kvcached.h"
        DESTINATION include/kvcached COMPONENT runtime)
foreach(doc configuration.md kvctl.md launch.md interposition.md engine-hook.md ledger.md)
  if(EXISTS "${KVCACHED_SOURCE_ROOT}/docs/${doc}")
    install(FILES "${KVCACHED_SOURCE_ROOT}/docs/${doc}" DESTINATION share/doc/kvcached
            COMPONENT runtime)
  endif()
endforeach()
install(FILES "${KVCACHED_SOURCE_ROOT}/packaging/README.md" DESTINATION share/doc/kvcached
        RENAME packaging.md COMPONENT runtime)
if(EXISTS "${KVCACHED_SOURCE_ROOT}/examples/launch/two-models.yaml")
  install(FILES "${KVCACHED_SOURCE_ROOT}/examples/launch/two-models.yaml"
          DESTINATION share/doc/kvcached/examples COMPONENT runtime)
endif()
