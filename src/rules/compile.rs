//! Compiling one CEL expression for mllpd: parse with the standard macros (plus `has("SEG")`),
//! then walk the expression once to check every name and to find what it reads.
//!
//! The walk refuses an unknown variable, key or function with its position, turns each call of
//! `field`/`fields`/`has`/`count` (whose argument must be a string literal, so a malformed path
//! is refused at load, not at 3 a.m.) into a hidden variable read, and records in [`Needs`]
//! which variables and keys the expression reads: per message only those are extracted.
//!
//! The walk is mllpd's own rather than `cel`'s `Program::references()`: that lists names only
//! (comprehension variables among them, selected keys and call arguments not), while the
//! extraction needs `root.key` pairs and literal paths.
//!
//! `has` is both CEL's presence macro (`has(msh.control_id)`) and mllpd's segment test
//! (`has("PV1")`). The `cel` crate's standard `has` macro refuses a literal argument and cannot
//! be replaced, so the environment here is the standard library without its macros, and the
//! six standard macros (`has`, `all`, `exists`, `exists_one`, `map`, `filter`) are declared
//! again below with the expansions of the CEL specification.

use std::sync::{Arc, LazyLock};

use cel::common::ast::{
    operators, CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue,
};
use cel::common::types::CelList;
use cel::common::value::Val;
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::Env;

use super::vars::{key_location, path_location, Needs, Probe, Root};
use crate::hl7::{Location, Path};

/// The environment every rule and filter is compiled and run with.
pub(crate) static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(build_env()));

/// Standard library functions, mllpd's macros, and the strings extension (`lowerAscii`,
/// `split`, `substring` … are what rule authors reach for on HL7 text).
fn build_env() -> Env {
    let mut env = Env::default().with_stdlib();
    let macros = [
        Macro::global(operators::HAS, 1, has_macro),
        Macro::receiver(operators::ALL, 2, all_macro),
        Macro::receiver(operators::EXISTS, 2, exists_macro),
        Macro::receiver(operators::EXISTS_ONE, 2, exists_one_macro),
        Macro::receiver("existsOne", 2, exists_one_macro),
        Macro::receiver(operators::MAP, 2, map_macro),
        Macro::receiver(operators::MAP, 3, map_macro),
        Macro::receiver(operators::FILTER, 2, filter_macro),
    ];
    for m in macros {
        // Declared once on an environment without macros: a duplicate is impossible.
        let _ = env.add_macro(m);
    }
    let _ = env.add_extension(cel::extensions::strings);
    env
}

/// The functions a rule may call besides operators and mllpd's own: CEL's standard library
/// and the strings extension. A name not here is refused at load ("unknown function").
const KNOWN_FUNCTIONS: &[&str] = &[
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "timestamp",
    "duration",
    "matches",
    "startsWith",
    "endsWith",
    "contains",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "replace",
    "split",
    "substring",
    "trim",
    "join",
    "reverse",
    "format",
];

/// Identifiers that name types (`type(x) == string`) rather than variables.
const TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "list",
    "map",
    "null_type",
    "type",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
];

/// A compile error of one expression: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompileError {
    /// 1-based line, 0 when unknown.
    pub line: u32,
    /// 1-based column (in characters), 0 when unknown.
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

/// One compiled expression: rewritten, with where it points.
#[derive(Clone, Debug)]
pub(crate) struct Compiled {
    /// The expression, with `root.key`, `field(...)` & co. and constant lists replaced by
    /// hidden variables (recorded in the [`Needs`] passed to [`compile`]).
    pub expr: IdedExpr,
    /// The first location it names: a `field`/`fields` path, else the field behind the first
    /// variable key it reads (in source order).
    pub location: Option<Location>,
}

/// Parses and checks `source`, recording what it reads in `needs` (shared by every
/// expression of a rule set, so a value read by several rules is extracted once).
pub(crate) fn compile(source: &str, needs: &mut Needs) -> Result<Compiled, CompileError> {
    let program = ENV.compile(source).map_err(|errors| {
        let first = errors.errors.first();
        CompileError {
            line: first.map_or(0, |e| clamp(e.pos.0)),
            column: first.map_or(0, |e| clamp(e.pos.1)),
            message: first.map_or_else(|| "does not parse".to_owned(), |e| e.msg.clone()),
        }
    })?;
    let mut expr = program.expression().clone();
    let mut walk = Walk {
        source,
        info: program.source_info(),
        needs,
        scope: Vec::new(),
        location: None,
    };
    walk.expr(&mut expr)?;
    Ok(Compiled {
        expr,
        location: walk.location.map(|(_, l)| l),
    })
}

/// A position as u32, 0 when negative (unknown).
fn clamp(n: isize) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// The state of one walk over an expression.
struct Walk<'s> {
    /// The source, for positions.
    source: &'s str,
    /// Node offsets in the source.
    info: &'s cel::common::ast::SourceInfo,
    /// What the expressions read.
    needs: &'s mut Needs,
    /// Comprehension variables in scope, innermost last.
    scope: Vec<String>,
    /// The first location named, with the source offset that named it.
    location: Option<(u32, Location)>,
}

impl Walk<'_> {
    /// An error at node `id`.
    fn error(&self, id: u64, message: String) -> CompileError {
        let (line, column) = self
            .info
            .offset_for(id)
            .map_or((0, 0), |(start, _)| line_column(self.source, start));
        CompileError {
            line,
            column,
            message,
        }
    }

    /// Records `location` if it comes before the one recorded.
    fn locate(&mut self, id: u64, location: Option<Location>) {
        let (Some(location), Some((at, _))) = (location, self.info.offset_for(id)) else {
            return;
        };
        if self.location.as_ref().is_none_or(|(first, _)| at < *first) {
            self.location = Some((at, location));
        }
    }

    /// Whether `name` is a comprehension variable in scope.
    fn in_scope(&self, name: &str) -> bool {
        self.scope.iter().any(|s| s == name)
    }

    /// Checks and rewrites `e`.
    fn expr(&mut self, e: &mut IdedExpr) -> Result<(), CompileError> {
        let id = e.id;
        match &mut e.expr {
            Expr::Ident(name) => {
                if self.in_scope(name) {
                    return Ok(());
                }
                if let Some(root) = Root::from_name(name) {
                    // The variable used whole: every key of it is read.
                    self.needs.whole(root);
                    return Ok(());
                }
                if TYPE_NAMES.contains(&name.as_str()) {
                    return Ok(());
                }
                Err(self.error(id, format!("unknown variable '{name}'")))
            }
            Expr::Select(select) => {
                if let Expr::Ident(name) = &select.operand.expr {
                    if !self.in_scope(name) {
                        if let Some(root) = Root::from_name(name) {
                            if !root.is_map() {
                                return Err(self.error(
                                    id,
                                    format!("'{name}' is a list: it has no key '{}'", select.field),
                                ));
                            }
                            let Some(k) = root.keys().iter().position(|k| k.name == select.field)
                            else {
                                return Err(self.error(
                                    id,
                                    format!("unknown variable '{name}.{}'", select.field),
                                ));
                            };
                            self.locate(id, key_location(root, k));
                            if select.test || !root.key_is_string(k) {
                                // `has(msh.x)` tests the map; a list key is read from it.
                                self.needs.whole(root);
                            } else {
                                e.expr = Expr::Ident(self.needs.key(root, k));
                            }
                            return Ok(());
                        }
                    }
                }
                self.expr(&mut select.operand)
            }
            Expr::Call(call) => {
                if call.target.is_none() {
                    if let Some(probe) = self.probe(id, call)? {
                        e.expr = Expr::Ident(self.needs.probe(probe));
                        return Ok(());
                    }
                }
                let name = call.func_name.as_str();
                let operator = name.starts_with(['_', '@', '!', '-']);
                if !operator && !KNOWN_FUNCTIONS.contains(&name) {
                    return Err(self.error(id, format!("unknown function '{name}'")));
                }
                if let Some(target) = &mut call.target {
                    self.expr(target)?;
                }
                for arg in &mut call.args {
                    self.expr(arg)?;
                }
                Ok(())
            }
            Expr::Comprehension(c) => {
                self.expr(&mut c.iter_range)?;
                self.expr(&mut c.accu_init)?;
                let depth = self.scope.len();
                self.scope.push(c.iter_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.scope.push(v.clone());
                }
                self.scope.push(c.accu_var.clone());
                let walked = [&mut c.loop_cond, &mut c.loop_step, &mut c.result]
                    .into_iter()
                    .try_for_each(|e| self.expr(e));
                self.scope.truncate(depth);
                walked
            }
            Expr::List(list) => {
                if let Some(constant) = constant_list(list) {
                    e.expr = Expr::Ident(self.needs.constant(constant));
                    return Ok(());
                }
                list.elements.iter_mut().try_for_each(|e| self.expr(e))
            }
            Expr::Map(map) => map
                .entries
                .iter_mut()
                .try_for_each(|entry| match &mut entry.expr {
                    EntryExpr::MapEntry(m) => {
                        self.expr(&mut m.key)?;
                        self.expr(&mut m.value)
                    }
                    EntryExpr::StructField(_) => {
                        Err(self.error(entry.id, "struct fields are not supported".to_owned()))
                    }
                }),
            Expr::Struct(_) => {
                Err(self.error(id, "message construction is not supported".to_owned()))
            }
            Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }

    /// The probe a global call of `field`/`fields`/`has`/`count` makes, checked; `None` for
    /// any other call.
    fn probe(&mut self, id: u64, call: &CallExpr) -> Result<Option<Probe>, CompileError> {
        let name = call.func_name.as_str();
        if !matches!(name, "field" | "fields" | "has" | "count") {
            return Ok(None);
        }
        let literal = match call.args.as_slice() {
            [IdedExpr {
                expr: Expr::Literal(LiteralValue::String(s)),
                ..
            }] => s.inner().to_owned(),
            _ => {
                let what = if matches!(name, "field" | "fields") {
                    "an HL7 path such as \"PID-3.1\""
                } else {
                    "a segment id such as \"PV1\""
                };
                return Err(self.error(id, format!("{name}() takes one string literal: {what}")));
            }
        };
        let probe = match name {
            "field" | "fields" => {
                let path: Path = literal.parse().map_err(|_| {
                    self.error(id, format!("{name}(\"{literal}\"): malformed HL7 path"))
                })?;
                self.locate(id, Some(path_location(&path)));
                if name == "field" {
                    Probe::Field(path)
                } else {
                    // `OBX(2)-5` names one segment; `OBX-5` every OBX.
                    let one_segment = literal.as_bytes().get(3) == Some(&b'(');
                    Probe::Fields { path, one_segment }
                }
            }
            _ => {
                let bytes = literal.as_bytes();
                let valid = bytes.len() == 3
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
                if !valid {
                    return Err(self.error(
                        id,
                        format!(
                            "{name}(\"{literal}\"): not a segment id (three letters or digits)"
                        ),
                    ));
                }
                let seg = [bytes[0], bytes[1], bytes[2]];
                if name == "has" {
                    Probe::Has(seg)
                } else {
                    Probe::Count(seg)
                }
            }
        };
        Ok(Some(probe))
    }
}

/// A list of two or more literals (`["ADT", "ORU"]`), built once here instead of at every
/// evaluation. One-element lists are left alone: `map` and `filter` append through them,
/// and the interpreter recognises that shape to append in place.
fn constant_list(list: &ListExpr) -> Option<Box<dyn Val>> {
    if list.elements.len() < 2 || !list.optional_indices.is_empty() {
        return None;
    }
    let values = list
        .elements
        .iter()
        .map(|e| match &e.expr {
            Expr::Literal(literal) => Some(literal.to_val().into_owned()),
            _ => None,
        })
        .collect::<Option<Vec<Box<dyn Val>>>>()?;
    Some(Box::new(CelList::from(values)))
}

/// 1-based line and column (in characters) of byte offset `offset` of `source` (the parser
/// records byte offsets).
fn line_column(source: &str, offset: u32) -> (u32, u32) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in source.char_indices() {
        if i as u64 >= u64::from(offset) {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

// --- The standard macros, expanded as the CEL specification defines them. ---

/// The result of a macro expander.
type Expansion = Result<Option<IdedExpr>, ParseError>;

/// `has(a.b)`: presence test; `has("SEG")` is left as a call (mllpd's segment test); any other
/// argument is refused.
fn has_macro(
    helper: &mut MacroExprHelper<'_>,
    _target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Expansion {
    match args.first().map(|a| &a.expr) {
        Some(Expr::Select(_)) => {
            let Some(IdedExpr {
                expr: Expr::Select(mut select),
                ..
            }) = args.pop()
            else {
                return Ok(None);
            };
            select.test = true;
            Ok(Some(helper.next_expr(Expr::Select(select))))
        }
        Some(Expr::Literal(LiteralValue::String(_))) => Ok(None),
        _ => {
            let at = args.first().map_or(0, |a| a.id);
            Err(helper.new_error(
                at,
                "invalid argument to has(): a field selection or a segment id literal",
            ))
        }
    }
}

/// The iteration variable of a comprehension macro: a simple name.
fn iter_var(helper: &MacroExprHelper<'_>, arg: &IdedExpr) -> Result<String, ParseError> {
    match &arg.expr {
        Expr::Ident(name) => Ok(name.clone()),
        _ => Err(helper.new_error(arg.id, "argument must be a simple name")),
    }
}

/// The accumulator's name: `@` keeps it out of reach of rules.
const RESULT: &str = "@result";

/// A new node.
fn node(helper: &mut MacroExprHelper<'_>, expr: Expr) -> IdedExpr {
    helper.next_expr(expr)
}

/// A call node.
fn call(helper: &mut MacroExprHelper<'_>, name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    node(
        helper,
        Expr::Call(CallExpr {
            func_name: name.to_owned(),
            target: None,
            args,
        }),
    )
}

/// The accumulator identifier.
fn accu(helper: &mut MacroExprHelper<'_>) -> IdedExpr {
    node(helper, Expr::Ident(RESULT.to_owned()))
}

/// The parts every comprehension macro shares: target, iteration variable, last argument.
fn parts(
    helper: &MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<(IdedExpr, String, IdedExpr)>, ParseError> {
    let var = match args.first() {
        Some(arg) => iter_var(helper, arg)?,
        None => return Ok(None),
    };
    let (Some(range), Some(last)) = (target.take(), args.pop()) else {
        return Ok(None);
    };
    Ok(Some((range, var, last)))
}

/// A comprehension node.
#[allow(clippy::too_many_arguments)]
fn comprehension(
    helper: &mut MacroExprHelper<'_>,
    range: IdedExpr,
    var: String,
    init: IdedExpr,
    cond: IdedExpr,
    step: IdedExpr,
    result: IdedExpr,
) -> Expansion {
    Ok(Some(node(
        helper,
        Expr::Comprehension(Box::new(ComprehensionExpr {
            iter_range: range,
            iter_var: var,
            iter_var2: None,
            accu_var: RESULT.to_owned(),
            accu_init: init,
            loop_cond: cond,
            loop_step: step,
            result,
        })),
    )))
}

/// A boolean literal.
fn boolean(helper: &mut MacroExprHelper<'_>, b: bool) -> IdedExpr {
    node(helper, Expr::Literal(LiteralValue::Boolean(b.into())))
}

/// A list literal.
fn list(helper: &mut MacroExprHelper<'_>, elements: Vec<IdedExpr>) -> IdedExpr {
    node(helper, Expr::List(ListExpr::new(elements)))
}

/// `r.all(x, p)`: true unless some `p` is false (errors absorbed as `&&` does).
fn all_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Expansion {
    let Some((range, var, predicate)) = parts(helper, target, args)? else {
        return Ok(None);
    };
    let init = boolean(helper, true);
    let a = accu(helper);
    let cond = call(helper, operators::NOT_STRICTLY_FALSE, vec![a]);
    let a = accu(helper);
    let step = call(helper, operators::LOGICAL_AND, vec![a, predicate]);
    let result = accu(helper);
    comprehension(helper, range, var, init, cond, step, result)
}

/// `r.exists(x, p)`: true when some `p` is true.
fn exists_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Expansion {
    let Some((range, var, predicate)) = parts(helper, target, args)? else {
        return Ok(None);
    };
    let init = boolean(helper, false);
    let a = accu(helper);
    let not = call(helper, operators::LOGICAL_NOT, vec![a]);
    let cond = call(helper, operators::NOT_STRICTLY_FALSE, vec![not]);
    let a = accu(helper);
    let step = call(helper, operators::LOGICAL_OR, vec![a, predicate]);
    let result = accu(helper);
    comprehension(helper, range, var, init, cond, step, result)
}

/// `r.exists_one(x, p)`: true when exactly one `p` is true.
fn exists_one_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Expansion {
    let Some((range, var, predicate)) = parts(helper, target, args)? else {
        return Ok(None);
    };
    let init = node(helper, Expr::Literal(LiteralValue::Int(0.into())));
    let cond = boolean(helper, true);
    let a = accu(helper);
    let one = node(helper, Expr::Literal(LiteralValue::Int(1.into())));
    let plus = call(helper, operators::ADD, vec![a, one]);
    let a = accu(helper);
    let step = call(helper, operators::CONDITIONAL, vec![predicate, plus, a]);
    let a = accu(helper);
    let one = node(helper, Expr::Literal(LiteralValue::Int(1.into())));
    let result = call(helper, operators::EQUALS, vec![a, one]);
    comprehension(helper, range, var, init, cond, step, result)
}

/// `r.map(x, f)` and `r.map(x, p, f)`: the list of `f` (for the `x` where `p` holds).
fn map_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Expansion {
    // `[x, f]` or `[x, p, f]`; the macro is declared for exactly two and three arguments.
    let var = match args.first() {
        Some(arg) => iter_var(helper, arg)?,
        None => return Ok(None),
    };
    if target.is_none() || !(2..=3).contains(&args.len()) {
        return Ok(None);
    }
    let (Some(range), Some(function)) = (target.take(), args.pop()) else {
        return Ok(None);
    };
    let filter = if args.len() == 2 { args.pop() } else { None };
    let init = list(helper, Vec::new());
    let cond = boolean(helper, true);
    let a = accu(helper);
    let one = list(helper, vec![function]);
    let step = call(helper, operators::ADD, vec![a, one]);
    let step = match filter {
        Some(filter) => {
            let a = accu(helper);
            // For `map(x, p, f)` the filter is the second argument and `f` the third.
            call(helper, operators::CONDITIONAL, vec![filter, step, a])
        }
        None => step,
    };
    let result = accu(helper);
    comprehension(helper, range, var, init, cond, step, result)
}

/// `r.filter(x, p)`: the `x` for which `p` holds.
fn filter_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Expansion {
    let Some((range, var, predicate)) = parts(helper, target, args)? else {
        return Ok(None);
    };
    let init = list(helper, Vec::new());
    let cond = boolean(helper, true);
    let a = accu(helper);
    let x = node(helper, Expr::Ident(var.clone()));
    let one = list(helper, vec![x]);
    let plus = call(helper, operators::ADD, vec![a, one]);
    let a = accu(helper);
    let step = call(helper, operators::CONDITIONAL, vec![predicate, plus, a]);
    let result = accu(helper);
    comprehension(helper, range, var, init, cond, step, result)
}
