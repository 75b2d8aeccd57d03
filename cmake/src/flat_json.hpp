// The few JSON values fastmed's package metadata holds: flat arrays of strings or numbers (export/metadata.py to_props).
#pragma once

#include <string>
#include <vector>

namespace fastmed::json {

// `["a", "b\u00e9"]` → {"a", "bé"} (UTF-8); throws std::invalid_argument on anything else.
std::vector<std::string> string_array(const std::string& text);

// `[0.485, 0.456, 0.406]` → numbers; throws std::invalid_argument on anything else.
std::vector<double> number_array(const std::string& text);

}  // namespace fastmed::json
