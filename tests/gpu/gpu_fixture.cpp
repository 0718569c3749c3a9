#include "tests/gpu/gpu_fixture.h"

#include <cstdlib>
#include <string>

namespace kvcached::gputest {

void GpuTest::SetUp() {
  const std::string reason = UnavailableReason();
  if (!reason.empty()) GTEST_SKIP() << reason;
  KVC_ASSERT_OK(UseDevice(kDevice));
}

Config GpuTest::BaseConfig() {
  Result<Config> env = LoadConfigFromEnvironment();
  Config c = env.ok() ? env.value() : Config{};
  c.cuda_driver = DriverPath();  // the driver behind the kernels (never a fake one on a GPU)
  c.log_level = LogLevel::kError;
  return c;
}

void GpuTest::StartRuntime(const Config& config) {
  rt_.reset();
  Result<std::unique_ptr<Runtime>> rt = Runtime::Create(config);
  ASSERT_TRUE(rt.ok()) << rt.status().message();
  rt_ = std::move(rt).value();
  page_ = config.page_size();
}

Status GpuTest::Acquire(std::uint64_t addr, std::uint64_t length) {
  const ByteRange r{addr, length};
  return rt_->Acquire({&r, 1});
}

Status GpuTest::Release(std::uint64_t addr, std::uint64_t length) {
  const ByteRange r{addr, length};
  return rt_->Release({&r, 1});
}

PageState GpuTest::StateAt(std::uint64_t addr) {
  Result<PageState> s = rt_->PageStateAt(addr);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? s.value() : PageState::kZero;
}

RegionInfo GpuTest::InfoOf(std::uint64_t addr) {
  Result<RegionInfo> i = rt_->Info(addr);
  EXPECT_TRUE(i.ok()) << i.status().message();
  return i.ok() ? i.value() : RegionInfo{};
}

DeviceStats GpuTest::Stats() {
  Result<DeviceStats> s = rt_->Stats(kDevice);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? s.value() : DeviceStats{};
}

std::uint64_t GpuTest::Create(std::uint64_t size, RegionKind kind) {
  Result<std::uint64_t> base = rt_->CreateRegion(kDevice, size, kind);
  EXPECT_TRUE(base.ok()) << base.status().message();
  return base.ok() ? base.value() : 0;
}

std::uint64_t EnvCount(const char* name, std::uint64_t def) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return def;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  return (end != nullptr && *end == '\0' && n > 0) ? n : def;
}

}  // namespace kvcached::gputest
