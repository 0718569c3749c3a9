// Misspelled or unknown variables: a KVCACHED_* name (any case) or a near miss of a known name
// that is not in the options table is ignored by every reader, so it is reported once (by the
// shim at its lazy start and by `kvctl doctor`) with the closest known name.
#pragma once

#include <string>
#include <vector>

namespace kvcached {

struct UnknownVariable {
  std::string name;        // as found in the environment
  std::string suggestion;  // the closest known variable, or empty when none is close
};

// The names in `names` that look meant for kvcached but are not known: any name starting with
// "KVCACHE" in any case, or within two edits (case-insensitive; a swap of two neighbours is one
// edit) of a known name. In the order given.
std::vector<UnknownVariable> FindUnknownVariables(const std::vector<std::string>& names);

// The names of this process's environment variables.
std::vector<std::string> EnvironmentNames();

// One line: the name "is not a kvcached variable and is ignored; did you mean" the suggestion,
// and where the variables are listed (docs/configuration.md).
std::string DescribeUnknown(const UnknownVariable& unknown);

// Case-insensitive edit distance (insert, delete, replace, swap of neighbours), for tests.
std::size_t VariableNameDistance(const std::string& a, const std::string& b);

}  // namespace kvcached
