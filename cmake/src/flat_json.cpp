#include "flat_json.hpp"

#include <cstdlib>
#include <stdexcept>

namespace fastmed::json {
namespace {

struct Cursor {
  const std::string& s;
  size_t i = 0;
  void skip_space() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  }
  void expect(char c) {
    skip_space();
    if (i >= s.size() || s[i] != c) throw std::invalid_argument(std::string("expected '") + c + "'");
    ++i;
  }
  bool peek(char c) {
    skip_space();
    return i < s.size() && s[i] == c;
  }
};

void append_utf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

unsigned hex4(Cursor& c) {
  if (c.i + 4 > c.s.size()) throw std::invalid_argument("truncated \\u escape");
  unsigned v = std::stoul(c.s.substr(c.i, 4), nullptr, 16);
  c.i += 4;
  return v;
}

std::string parse_string(Cursor& c) {
  c.expect('"');
  std::string out;
  while (c.i < c.s.size() && c.s[c.i] != '"') {
    char ch = c.s[c.i++];
    if (ch != '\\') {
      out += ch;
      continue;
    }
    if (c.i >= c.s.size()) break;
    char e = c.s[c.i++];
    switch (e) {
      case '"': case '\\': case '/': out += e; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        unsigned cp = hex4(c);
        if (cp >= 0xD800 && cp < 0xDC00 && c.s.compare(c.i, 2, "\\u") == 0) {  // surrogate pair
          c.i += 2;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(c) - 0xDC00);
        }
        append_utf8(out, cp);
        break;
      }
      default: throw std::invalid_argument("bad escape");
    }
  }
  c.expect('"');
  return out;
}

template <class T, class Item>
std::vector<T> parse_array(const std::string& text, Item item) {
  Cursor c{text};
  std::vector<T> out;
  c.expect('[');
  if (!c.peek(']')) {
    do {
      out.push_back(item(c));
    } while (c.peek(',') && (++c.i, true));
  }
  c.expect(']');
  c.skip_space();
  if (c.i != text.size()) throw std::invalid_argument("trailing characters");
  return out;
}

}  // namespace

std::vector<std::string> string_array(const std::string& text) {
  return parse_array<std::string>(text, parse_string);
}

std::vector<double> number_array(const std::string& text) {
  return parse_array<double>(text, [](Cursor& c) {
    c.skip_space();
    const char* start = c.s.c_str() + c.i;
    char* end = nullptr;
    double v = std::strtod(start, &end);
    if (end == start) throw std::invalid_argument("expected a number");
    c.i += static_cast<size_t>(end - start);
    return v;
  });
}

}  // namespace fastmed::json
