#include "hooks/reentrancy.h"

namespace kvcached::hooks {
namespace {
// A plain int (no constructor, no destructor): thread_local costs one TLS access.
thread_local int t_real_call_depth = 0;
}  // namespace

bool InRealCall() {
  return t_real_call_depth > 0;
}
RealCallScope::RealCallScope() {
  ++t_real_call_depth;
}
RealCallScope::~RealCallScope() {
  --t_real_call_depth;
}

}  // namespace kvcached::hooks
