// The version kvcached_version() reports. The build may pass KVCACHED_VERSION_STRING (the CMake
// project version); the literal is the fallback and must follow the project version.
#pragma once

namespace kvcached::shim {
#ifdef KVCACHED_VERSION_STRING
inline constexpr const char* kVersion = KVCACHED_VERSION_STRING;
#else
inline constexpr const char* kVersion = "0.1.0";
#endif
}  // namespace kvcached::shim
