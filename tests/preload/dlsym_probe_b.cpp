// Test library B for the dlsym RTLD_NEXT test: the definition after library A's.
extern "C" __attribute__((visibility("default"))) int kvc_probe_value() {
  return 2;
}
