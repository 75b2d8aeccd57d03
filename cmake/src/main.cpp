// fastmed-run: class probabilities for PNG/JPEG files from a fastmed AOTInductor package, with latency percentiles.
//
//   fastmed-run --model M.pt2 [--csv OUT] [--batch N] [--warmup K] [--repeat R] IMAGE...
//
// CSV (to --csv or stdout): path,class,prob_<name>... (one prob_ column per class, in the model's order; the
// layout of export/predictions.py). --warmup K untimed passes over the first batch come first, then --repeat R
// timed passes over every image. Latency per image, p50/p95/p99 over the timed passes, goes to stderr:
// "compute" is the model call alone (batch time / batch size), "decode+preprocess+compute" adds decoding and
// preprocessing.
// A file that cannot be decoded is reported on stderr and skipped. Exit status: 0 when some image was
// predicted, 1 when none was, 2 on a usage or model error (one line on stderr).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "fastmed/classifier.hpp"
#include "image_io.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string model, csv;
  int batch = 1, warmup = 1, repeat = 1;
  std::vector<std::string> images;
};

constexpr const char* kUsage =
    "usage: fastmed-run --model M.pt2 [--csv OUT] [--batch N] [--warmup K] [--repeat R] IMAGE...";

int to_int(const std::string& flag, const std::string& value, int min) {
  try {
    size_t used = 0;
    int v = std::stoi(value, &used);
    if (used == value.size() && v >= min) return v;
  } catch (const std::exception&) {
  }
  throw fastmed::Error("option " + flag + " must be an integer >= " + std::to_string(min) + ", got '" + value + "'");
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw fastmed::Error("option " + s + " needs a value");
      return argv[++i];
    };
    if (s == "--model") a.model = value();
    else if (s == "--csv") a.csv = value();
    else if (s == "--batch") a.batch = to_int(s, value(), 1);
    else if (s == "--warmup") a.warmup = to_int(s, value(), 0);
    else if (s == "--repeat") a.repeat = to_int(s, value(), 1);
    else if (s == "-h" || s == "--help") std::cout << kUsage << "\n", std::exit(0);
    else if (s.rfind("--", 0) == 0) throw fastmed::Error("unknown option " + s + "\n" + kUsage);
    else a.images.push_back(s);
  }
  if (a.model.empty()) throw fastmed::Error(std::string("--model is required\n") + kUsage);
  if (a.images.empty()) throw fastmed::Error(std::string("no IMAGE given\n") + kUsage);
  return a;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

double percentile(std::vector<double> v, double q) {  // linear interpolation, as numpy.percentile
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * (v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

struct Row {
  std::string path;
  std::vector<float> probs;
};

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// One pass over every image in batches; appends per-image latencies; returns the rows of readable images.
std::vector<Row> run_pass(fastmed::Classifier& model, const std::vector<std::string>& images, int batch,
                          std::vector<double>* compute_ms, std::vector<double>* total_ms, bool report_skipped) {
  std::vector<Row> rows;
  for (size_t start = 0; start < images.size(); start += batch) {
    const auto t0 = Clock::now();
    std::vector<at::Tensor> inputs;
    std::vector<std::string> paths;
    for (size_t i = start; i < std::min(images.size(), start + batch); ++i) {
      try {
        fastmed::RgbImage img = fastmed::read_rgb(images[i]);
        inputs.push_back(model.preprocess(img.pixels.data(), img.height, img.width));
        paths.push_back(images[i]);
      } catch (const fastmed::Error& e) {
        if (report_skipped) std::cerr << "[fastmed-run] skipped " << images[i] << ": " << e.what() << "\n";
      }
    }
    if (inputs.empty()) continue;
    const auto t1 = Clock::now();
    at::Tensor probs = model.infer(at::stack(inputs)).contiguous();
    const double compute = ms_since(t1), total = ms_since(t0);
    for (size_t k = 0; k < paths.size(); ++k) {
      if (compute_ms) compute_ms->push_back(compute / paths.size());
      if (total_ms) total_ms->push_back(total / paths.size());
      const float* p = probs.data_ptr<float>() + k * probs.size(1);
      rows.push_back({paths[k], std::vector<float>(p, p + probs.size(1))});
    }
  }
  return rows;
}

void write_csv(std::ostream& out, const std::vector<Row>& rows, const std::vector<std::string>& names) {
  out << "path,class";
  for (const auto& n : names) out << "," << csv_field("prob_" + n);
  out << "\n";
  char buf[32];
  for (const auto& r : rows) {
    const auto best = std::max_element(r.probs.begin(), r.probs.end()) - r.probs.begin();
    out << csv_field(r.path) << "," << csv_field(names[best]);
    for (float p : r.probs) std::snprintf(buf, sizeof buf, ",%.9g", p), out << buf;
    out << "\n";
  }
}

void report(const char* what, const std::vector<double>& ms) {
  if (ms.empty()) return;
  std::fprintf(stderr, "[fastmed-run] %s ms/image: p50 %.3f p95 %.3f p99 %.3f (n=%zu)\n", what,
               percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), ms.size());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    fastmed::Classifier model(args.model);
    const auto& info = model.info();
    std::vector<std::string> first(args.images.begin(), args.images.begin() + std::min<size_t>(args.batch, args.images.size()));
    for (int k = 0; k < args.warmup; ++k) run_pass(model, first, args.batch, nullptr, nullptr, false);
    std::vector<double> compute_ms, total_ms;
    std::vector<Row> rows;
    for (int r = 0; r < args.repeat; ++r) rows = run_pass(model, args.images, args.batch, &compute_ms, &total_ms, r == 0);
    if (args.csv.empty()) {
      write_csv(std::cout, rows, info.class_names);
    } else {
      std::ofstream out(args.csv);
      if (!out) throw fastmed::Error("cannot write --csv " + args.csv);
      write_csv(out, rows, info.class_names);
      if (!out.flush()) throw fastmed::Error("cannot write --csv " + args.csv);
    }
    std::fprintf(stderr, "[fastmed-run] %zu images (%zu skipped), batch %d, %d timed pass(es) on %s\n", rows.size(),
                 args.images.size() - rows.size(), args.batch, args.repeat, info.device.c_str());
    report("compute", compute_ms);
    report("decode+preprocess+compute", total_ms);
    return rows.empty() ? 1 : 0;
  } catch (const fastmed::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << std::string(e.what()).substr(0, std::string(e.what()).find('\n')) << "\n";
    return 2;
  }
}
