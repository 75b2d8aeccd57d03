#include "image_io.hpp"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include <jpeglib.h>
#include <png.h>

#include "fastmed/classifier.hpp"

namespace fastmed {
namespace {

constexpr int64_t kMaxPixels = 178956970;  // PIL's decompression-bomb limit (2 x MAX_IMAGE_PIXELS)

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

void check_size(const std::string& path, int64_t height, int64_t width) {
  if (height < 1 || width < 1) throw Error("cannot read image " + path + ": empty image");
  if (height * width > kMaxPixels) throw Error("cannot read image " + path + ": too many pixels (decompression bomb?)");
}

void png_fail(png_structp png, png_const_charp message) {  // keep libpng's message for our error, print nothing
  std::snprintf(static_cast<char*>(png_get_error_ptr(png)), 200, "%s", message);
  png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}

RgbImage read_png(FILE* f, const std::string& path) {
  char message[200] = "corrupt PNG";
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, png_fail, png_warn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error("cannot read image " + path + ": libpng out of memory");
  }
  RgbImage img;
  std::vector<uint8_t> raw;  // declared before setjmp: still destroyed when libpng jumps back
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error("cannot read image " + path + ": corrupt or truncated PNG (" + message + ")");
  }
  png_init_io(png, f);
  png_read_info(png, info);
  const int64_t width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  check_size(path, height, width);
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  const bool grey16 = depth == 16 && !(color & PNG_COLOR_MASK_COLOR);
  png_set_expand(png);  // palette → RGB, grey < 8 bits → 8 bits, tRNS → alpha
  png_set_strip_alpha(png);
  if (depth == 16 && !grey16) png_set_strip_16(png);
  if (depth == 16 && grey16) png_set_swap(png);  // host byte order for the x / 257 rescale below
  if (!grey16) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  img.height = static_cast<int>(height);
  img.width = static_cast<int>(width);
  raw.resize(rowbytes * height);
  rows.resize(height);
  for (int64_t y = 0; y < height; ++y) rows[y] = raw.data() + y * rowbytes;
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  if (!grey16) {
    raw.resize(static_cast<size_t>(height * width * 3));
    img.pixels = std::move(raw);
    return img;
  }
  img.pixels.resize(static_cast<size_t>(height * width * 3));
  for (int64_t i = 0; i < height * width; ++i) {
    uint16_t v;
    std::memcpy(&v, raw.data() + 2 * i, 2);
    const auto g = static_cast<uint8_t>((v + 128u) / 257u);  // fastmed.data.images.to_rgb
    img.pixels[3 * i] = img.pixels[3 * i + 1] = img.pixels[3 * i + 2] = g;
  }
  return img;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_warn(j_common_ptr cinfo, int level) {  // a corrupt-data warning is an error: no half-grey images
  if (level < 0) jpeg_fail(cinfo);
}

RgbImage read_jpeg(FILE* f, const std::string& path) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_warn;
  RgbImage img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error("cannot read image " + path + ": " + err.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK)
    std::strcpy(err.message, "CMYK JPEGs are not supported"), std::longjmp(err.jump, 1);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  check_size(path, cinfo.output_height, cinfo.output_width);
  img.height = static_cast<int>(cinfo.output_height);
  img.width = static_cast<int>(cinfo.output_width);
  img.pixels.resize(static_cast<size_t>(img.height) * img.width * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * img.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

}  // namespace

RgbImage read_rgb(const std::string& path) {
  File f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw Error("cannot read image " + path + ": " + std::strerror(errno));
  unsigned char magic[8] = {0};
  const size_t n = std::fread(magic, 1, sizeof magic, f.get());
  std::rewind(f.get());
  if (n == 8 && png_sig_cmp(magic, 0, 8) == 0) return read_png(f.get(), path);
  if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return read_jpeg(f.get(), path);
  throw Error("cannot read image " + path + ": not a PNG or JPEG file");
}

}  // namespace fastmed
