// Compile-time task names: FixedString (a string literal as a template argument), Task<"name",
// Head> and Group<"group", "task", ...>, and the name lookups Model and the sharing strategies use.
//
//   mtl::Task<"sentiment", mtl::SequenceClassifier<2>>   a task: a name and its head type
//   mtl::Group<"generation", "translate", "summarize">    a group of tasks (hierarchical / soft sharing)
//
// Lookups are constexpr functions over packs (one fold each, no recursion), so a model with N
// tasks instantiates O(N) small templates, never a nested type per task.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string_view>
#include <type_traits>

namespace cerberus::mtl {

// A string literal usable as a template argument: Task<"sentiment", Head>.
template <std::size_t N>
struct FixedString {
  char chars[N]{};
  constexpr FixedString(const char (&s)[N]) { std::copy_n(s, N, chars); }  // NOLINT(google-explicit-constructor)
  constexpr std::string_view view() const { return {chars, N - 1}; }
  constexpr operator std::string_view() const { return view(); }  // NOLINT(google-explicit-constructor)
  static constexpr std::size_t size() { return N - 1; }
};

template <std::size_t A, std::size_t B>
constexpr bool operator==(const FixedString<A>& a, const FixedString<B>& b) {
  return a.view() == b.view();
}

// A task of a multi-task model: its compile-time name and its head type.
template <FixedString Name, class Head>
struct Task {
  static constexpr auto name = Name;
  using head_type = Head;
  using mtl_task_tag = void;  // what is_task_v looks for
};

// A group of tasks sharing upper layers (Hierarchical) or a trunk (Soft): a name, then members.
template <FixedString Name, FixedString... Members>
struct Group {
  using mtl_group_tag = void;  // what is_group_v looks for
  static constexpr auto name = Name;
  static constexpr std::size_t size = sizeof...(Members);
  static constexpr std::array<std::string_view, sizeof...(Members)> members{std::string_view(Members)...};
};

// (Tags rather than partial specialisations on Task<Name, Head>: nvcc's front end does not match
// a class-type template parameter deduced in a partial specialisation.)
template <class X>
inline constexpr bool is_task_v = requires { typename X::mtl_task_tag; };

template <class X>
inline constexpr bool is_group_v = requires { typename X::mtl_group_tag; };

// The task names of a model as one constexpr array (Names<Tasks...>::value).
template <class... Tasks>
struct TaskNames {
  static constexpr std::array<std::string_view, sizeof...(Tasks)> value{std::string_view(Tasks::name)...};
};

namespace names {

inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

template <std::size_t N>
constexpr std::size_t index_of(const std::array<std::string_view, N>& all, std::string_view name) {
  for (std::size_t i = 0; i < N; ++i)
    if (all[i] == name) return i;
  return npos;
}

template <std::size_t N>
constexpr bool distinct(const std::array<std::string_view, N>& all) {
  for (std::size_t i = 0; i < N; ++i)
    for (std::size_t j = i + 1; j < N; ++j)
      if (all[i] == all[j]) return false;
  return true;
}

// Every member of every group is one of the tasks.
template <std::size_t N, class... Groups>
constexpr bool groups_name_known_tasks(const std::array<std::string_view, N>& tasks) {
  bool ok = true;
  ((ok = ok && std::all_of(Groups::members.begin(), Groups::members.end(),
                           [&](std::string_view m) { return index_of(tasks, m) != npos; })),
   ...);
  return ok;
}

// Each task is in exactly one group.
template <std::size_t N, class... Groups>
constexpr bool groups_cover_tasks_once(const std::array<std::string_view, N>& tasks) {
  for (std::size_t t = 0; t < N; ++t) {
    std::size_t count = 0;
    ((count += static_cast<std::size_t>(std::count(Groups::members.begin(), Groups::members.end(), tasks[t]))), ...);
    if (count != 1) return false;
  }
  return true;
}

// The group index of each task (groups must partition the tasks).
template <std::size_t N, class... Groups>
constexpr std::array<std::size_t, N> group_of_tasks(const std::array<std::string_view, N>& tasks) {
  std::array<std::size_t, N> out{};
  for (std::size_t t = 0; t < N; ++t) {
    std::size_t g = 0, found = npos;
    ((found = (found == npos && std::count(Groups::members.begin(), Groups::members.end(), tasks[t]) > 0) ? g : found, ++g), ...);
    out[t] = found;
  }
  return out;
}

}  // namespace names
}  // namespace cerberus::mtl
