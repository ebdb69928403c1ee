// libtorch 1.13 imports a class body by sorting its assignments into attributes (`name : T`),
// constants (`name : Final[T] = v`) and a few specials (`__parameters__ = [...]`, ...). An
// assignment with a value but no type (`__beffers__ = []`, which is `__buffers__` with one byte
// changed) is taken for a constant, and parseClassConstant reads its missing type annotation:
// an invalid read that kills the process (PyTorch 2.x added the check). Enum and NamedTuple
// bodies have the same gap the other way round (a value or a type missing).
//
// So before the load we parse every source entry with libtorch's own parser (the same tokens
// and trees the importer will see; parsing does not crash, a syntax error is an exception) and
// reject the class bodies the importer cannot handle safely.
#include "code_check.h"
#include "common.h"

#include <torch/csrc/jit/frontend/lexer.h>
#include <torch/csrc/jit/frontend/parser.h>
#include <torch/csrc/jit/frontend/source_range.h>
#include <torch/csrc/jit/frontend/tree_views.h>

#include <set>
#include <stdexcept>

namespace finetorch {
namespace {

using namespace torch::jit;

std::string LineOf(const SourceRange& r) {
  auto src = r.source();
  if (!src) return "?";
  return std::to_string(src->lineno_for_offset(r.start()) + 1);
}

[[noreturn]] void Reject(const std::string& entry, const SourceRange& r, const std::string& why) {
  throw CodedError("FINETORCH_BAD_MODEL_FILE", entry + " line " + LineOf(r) + ": " + why + " (a damaged code entry)");
}

std::string BaseName(const ClassDef& cls) {
  if (!cls.superclass().present()) return "";
  Expr e = cls.superclass().get();
  if (e.kind() == TK_VAR) return Var(e).name().name();
  return "";
}

void CheckClass(const std::string& entry, const ClassDef& cls) {
  static const std::set<std::string> special = {"__parameters__", "__buffers__", "__annotations__",
                                                "__forward_pre_hooks__", "__forward_hooks__"};
  const std::string base = BaseName(cls);
  const std::string name = cls.name().name();
  for (const Stmt& stmt : cls.body()) {
    if (stmt.kind() != TK_ASSIGN) continue;  // methods; anything else the importer rejects itself
    Assign assign(stmt);
    if (assign.lhs_list().size() != 1) Reject(entry, stmt.range(), "class " + name + " has a multiple assignment");
    Expr lhs = assign.lhs();
    if (base == "Enum") {
      if (lhs.kind() != TK_VAR) Reject(entry, stmt.range(), "enum " + name + " assigns to something that is not a name");
      if (!assign.rhs().present()) Reject(entry, stmt.range(), "enum " + name + " has a member without a value");
      continue;
    }
    if (base == "NamedTuple") {
      if (lhs.kind() != TK_VAR) Reject(entry, stmt.range(), "named tuple " + name + " has a field that is not a name");
      if (!assign.type().present()) Reject(entry, stmt.range(), "named tuple " + name + " has a field without a type");
      continue;
    }
    if (lhs.kind() != TK_VAR) continue;  // __annotations__["0"] = T: checked by the importer
    const std::string var = Var(lhs).name().name();
    if (special.count(var)) {
      if (!assign.rhs().present()) Reject(entry, stmt.range(), "class " + name + " declares " + var + " without a value");
      continue;
    }
    if (assign.rhs().present() && !assign.type().present()) {
      Reject(entry, stmt.range(), "class " + name + " assigns '" + var + "' a value without a type");
    }
  }
}

void CheckEntry(const std::string& entry, const std::string& text) {
  Parser p(std::make_shared<Source>(c10::string_view(text), entry, 0));
  Lexer& L = p.lexer();
  // the same top-level walk as libtorch's SourceImporter: an optional version line, imports,
  // then classes and functions
  if (L.cur().kind == TK_IDENT && L.cur().text() == "op_version_set") {
    L.next();
    L.expect('=');
    L.expect(TK_NUMBER);
    L.expect(TK_NEWLINE);
  }
  while (L.cur().kind != TK_EOF) {
    while (L.nextIf(TK_IMPORT)) {
      while (L.cur().kind != TK_NEWLINE && L.cur().kind != TK_EOF) L.next();
      L.expect(TK_NEWLINE);
    }
    if (L.cur().kind == TK_CLASS_DEF) {
      CheckClass(entry, ClassDef(p.parseClass()));
    } else if (L.cur().kind == TK_DEF) {
      p.parseFunction(/*is_method=*/false);
    } else if (L.cur().kind != TK_EOF) {
      Reject(entry, L.cur().range, "unexpected '" + kindToString(L.cur().kind) + "' at the top level");
    }
  }
}

}  // namespace

void CheckCodeEntries(const std::vector<std::pair<std::string, std::string>>& entries) {
  for (const auto& [name, text] : entries) CheckEntry(name, text);
}

}  // namespace finetorch
