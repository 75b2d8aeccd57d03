#include "fastmed/classifier.hpp"

#include <algorithm>
#include <filesystem>
#include <unordered_map>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include "flat_json.hpp"

namespace fastmed {
namespace {

constexpr const char* kPrefix = "fastmed.";          // one key per ModelMetadata field (export/aoti_export.py)
constexpr const char* kMaxBatch = "fastmed_max_batch";
constexpr const char* kFloatNchw = "float32-nchw-normalized";

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

ModelInfo read_info(const std::unordered_map<std::string, std::string>& meta, const std::string& path) {
  auto get = [&](const std::string& field) -> const std::string& {
    auto it = meta.find(kPrefix + field);
    if (it == meta.end())
      throw Error(path + " has no fastmed metadata field '" + field +
                  "', so it is not a fastmed export; make one with `fastmed export --weights best.pt --format aoti`");
    return it->second;
  };
  auto field_error = [&](const std::string& field, const std::string& why) {
    return Error(path + ": fastmed metadata field '" + field + "' " + why + ", got " + get(field));
  };
  ModelInfo info;
  info.task = get("task");
  info.kind = get("kind");
  info.arch = meta.count(std::string(kPrefix) + "arch") ? get("arch") : "";
  info.channel_order = meta.count(std::string(kPrefix) + "channel_order") ? get("channel_order") : "RGB";
  info.input_format = meta.count(std::string(kPrefix) + "input_format") ? get("input_format") : kFloatNchw;
  auto device = meta.find("AOTI_DEVICE_KEY");
  info.device = device == meta.end() ? "cpu" : device->second;
  if (info.kind != "classifier") throw field_error("kind", "must be classifier");
  if (info.input_format != kFloatNchw) throw field_error("input_format", std::string("must be ") + kFloatNchw);
  if (info.channel_order != "RGB" && info.channel_order != "BGR") throw field_error("channel_order", "must be RGB or BGR");
  try {
    info.class_names = json::string_array(get("class_names"));
  } catch (const std::invalid_argument&) {
    throw field_error("class_names", "must be a JSON list of strings");
  }
  if (info.class_names.empty()) throw field_error("class_names", "must not be empty");
  std::vector<double> size, mean, stdev;
  try {
    size = json::number_array(get("input_size"));
    mean = json::number_array(get("mean"));
    stdev = json::number_array(get("std"));
  } catch (const std::invalid_argument&) {
    throw Error(path + ": fastmed metadata input_size, mean and std must be JSON lists of numbers");
  }
  if (size.size() != 2 || size[0] < 1 || size[1] < 1) throw field_error("input_size", "must be [height, width]");
  if (mean.size() != 3 || stdev.size() != 3) throw Error(path + ": fastmed metadata mean and std need 3 values each");
  info.input_height = static_cast<int>(size[0]);
  info.input_width = static_cast<int>(size[1]);
  for (int c = 0; c < 3; ++c) {
    if (!(stdev[c] > 0)) throw field_error("std", "must be positive");
    info.mean[c] = static_cast<float>(mean[c]);
    info.std[c] = static_cast<float>(stdev[c]);
  }
  auto mb = meta.find(kMaxBatch);
  info.max_batch = mb == meta.end() ? 1 : std::max(1, std::stoi(mb->second));
  return info;
}

}  // namespace

Classifier::Classifier(const std::string& package_path) {
  if (!std::filesystem::is_regular_file(package_path)) throw Error("model file not found: " + package_path);
  try {
    loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(package_path);
  } catch (const std::exception& e) {
    throw Error("cannot load AOTInductor package " + package_path + ": " + first_line(e.what()));
  }
  info_ = read_info(loader_->get_metadata(), package_path);
}

Classifier::~Classifier() = default;

at::Tensor Classifier::preprocess(const uint8_t* rgb, int height, int width) const {
  if (rgb == nullptr || height < 1 || width < 1) throw Error("preprocess: empty image");
  c10::InferenceMode guard;
  // (1, 3, H, W) view of the HWC bytes (channels-last strides, as torchvision sees a permuted HWC array)
  at::Tensor x = at::from_blob(const_cast<uint8_t*>(rgb), {1, height, width, 3}, at::kByte).permute({0, 3, 1, 2});
  if (height != info_.input_height || width != info_.input_width)
    x = at::_upsample_bilinear2d_aa(x, {info_.input_height, info_.input_width}, /*align_corners=*/false);
  if (info_.channel_order == "BGR") x = x.flip({1});
  at::Tensor f = x.to(at::kFloat).div_(255.0f);
  at::Tensor mean = at::tensor(std::vector<float>(info_.mean, info_.mean + 3)).view({1, 3, 1, 1});
  at::Tensor stdev = at::tensor(std::vector<float>(info_.std, info_.std + 3)).view({1, 3, 1, 1});
  return f.sub_(mean).div_(stdev).contiguous().squeeze(0);
}

at::Tensor Classifier::infer(const at::Tensor& batch) {
  c10::InferenceMode guard;
  const at::Device device(info_.device);
  std::vector<at::Tensor> probs;
  for (int64_t start = 0; start < batch.size(0); start += info_.max_batch) {
    at::Tensor chunk = batch.narrow(0, start, std::min<int64_t>(info_.max_batch, batch.size(0) - start));
    std::vector<at::Tensor> inputs{chunk.to(device).contiguous()};
    at::Tensor logits = loader_->run(inputs).at(0).to(at::kCPU);
    if (logits.dim() != 2 || logits.size(1) != static_cast<int64_t>(info_.class_names.size()))
      throw Error("the model's output does not have one column per class in its metadata; re-export it");
    probs.push_back(logits.to(at::kDouble).softmax(1).to(at::kFloat));
  }
  return at::cat(probs);
}

std::vector<float> Classifier::predict(const uint8_t* rgb, int height, int width) {
  at::Tensor p = infer(preprocess(rgb, height, width).unsqueeze(0)).contiguous();
  return {p.data_ptr<float>(), p.data_ptr<float>() + p.numel()};
}

}  // namespace fastmed
