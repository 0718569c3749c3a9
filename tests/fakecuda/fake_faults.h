// FAKECUDA_FAIL / fakecuda_set_faults: parsing the fault spec.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tests/fakecuda/fake_state.h"

namespace fakecuda {

// Parses "fn:N[+][:ERR],..." into faults whose counting starts at the current call counts.
// Returns false and a message naming the bad entry and the expected form.
bool ParseFaults(std::string_view spec, const State& s, std::vector<Fault>* out,
                 std::string* error);

}  // namespace fakecuda
