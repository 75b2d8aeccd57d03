// PNG and JPEG files → (height, width, 3) uint8 RGB, converted as fastmed's Python reader does
// (grey → RGB, alpha dropped, palettes expanded, 16-bit grey rescaled x / 257; CMYK JPEGs are refused).
// The format is read from the file's first bytes, not its name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastmed {

struct RgbImage {
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;  // height * width * 3, row-major RGB
};

// Throws fastmed::Error naming the file when it is missing, truncated, corrupt or not a PNG/JPEG.
RgbImage read_rgb(const std::string& path);

}  // namespace fastmed
