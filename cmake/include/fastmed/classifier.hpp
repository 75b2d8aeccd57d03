// fastmed native runtime: a classifier exported by `fastmed export --format aoti` (an AOTInductor .pt2 package).
//
//   fastmed::Classifier model("model.pt2");            // load once
//   std::vector<float> p = model.predict(rgb, h, w);   // (C) class probabilities, in model.info().class_names order
//
// Preprocessing comes from the package's fastmed metadata and matches fastmed's Python Predictor:
// antialiased bilinear resize of the uint8 image to the model's input size (the same ATen kernel that
// torchvision's Resize(antialias=True) runs on a uint8 image), channel order, then (x / 255 - mean) / std.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace fastmed {

// A user-facing failure (bad model file, bad metadata, unreadable image): one line, no stack trace.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The fastmed metadata of a package (see export/aoti_export.py; field meanings in export/metadata.py).
struct ModelInfo {
  std::string task, kind, arch, channel_order, input_format, device;
  std::vector<std::string> class_names;
  int input_height = 0, input_width = 0;
  int max_batch = 1;  // the largest batch the package accepts; larger batches are run in chunks
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
};

class Classifier {
 public:
  // Loads the package (throws fastmed::Error when it is not a fastmed AOTInductor classifier).
  explicit Classifier(const std::string& package_path);
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  const ModelInfo& info() const { return info_; }

  // One (height, width, 3) uint8 RGB image, row-major → (C) probabilities.
  std::vector<float> predict(const uint8_t* rgb, int height, int width);

  // One image → its (3, H, W) float32 input at model size (resized, channel order, normalized).
  at::Tensor preprocess(const uint8_t* rgb, int height, int width) const;

  // (N, 3, H, W) float32 inputs → (N, C) float32 probabilities (softmax in float64, as the Python Predictor).
  at::Tensor infer(const at::Tensor& batch);

 private:
  ModelInfo info_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
};

}  // namespace fastmed
