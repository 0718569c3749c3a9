// What `kvctl doctor` learns from the CUDA driver, reached only through dlopen and
// cuGetProcAddress (kvctl links no CUDA library, exactly like the shim).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvctl {

struct DeviceProbe {
  int ordinal = 0;
  std::string name;
  std::string uuid;
  std::uint64_t total_bytes = 0;
  bool vmm = false;  // CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
};

struct DriverProbe {
  std::string path;  // what was dlopened
  bool loaded = false;
  std::string error;       // why it could not be loaded or queried
  int driver_version = 0;  // e.g. 13000
  std::vector<DeviceProbe> devices;
};

DriverProbe ProbeDriver(const std::string& path);

}  // namespace kvctl
