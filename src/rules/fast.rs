//! A direct evaluator for the shapes most rules take: string comparisons and allow-lists of
//! what mllpd extracts, joined by `&&`, `||` and `!`.
//!
//! Why not the `cel` crate alone: its interpreter resolves every identifier by name on each
//! evaluation (container candidates, the scopes, then our resolver parsing `@k0`), and builds a
//! `Context` per message; for five typical rules that was about half of their cost (issue 9
//! item 8: the server's CPU per message with five rules must stay within 1.15x of none). The
//! crate has no way to bind a compiled expression to its variables ahead of time, so a rule
//! whose rewritten expression is made only of the shapes below is also compiled here, once,
//! into a tree that reads the extracted slots by index. Anything else (and anything this
//! evaluator cannot decide at run time) goes to the `cel` interpreter as before.
//!
//! The shapes, and why each gives exactly CEL's answer:
//! - a string: a `root.key` slot (`@k{n}`), a `field("…")` probe (`@p{n}`, a `Probe::Field`)
//!   or a string literal. Every such slot holds a string, so no type error can arise;
//! - `a == b`, `a != b` on two strings: CEL compares strings by content;
//! - `a in [..]` with `[..]` a constant list of string literals (`@c{n}`): CEL's list `in` is
//!   "some element equals `a`", and a string equals a string by content only;
//! - `p && q`, `p || q`, `!p` on the above, and `true`/`false`: the operands are bools and never
//!   errors, so CEL's error-absorbing `&&`/`||` reduce to the short-circuit ones.

use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelList, CelString};

use super::vars::{Needs, Probe, Slots};

/// A string operand.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Text {
    /// `@k{n}`: the n-th `root.key` slot.
    Key(usize),
    /// `@p{n}`: the n-th probe, a `field("…")`.
    Field(usize),
    /// A string literal.
    Literal(String),
}

/// A boolean expression of the fast shapes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fast {
    /// `true` or `false`.
    Bool(bool),
    /// `a == b` (`equal`) or `a != b`.
    Compare {
        /// Left operand.
        left: Text,
        /// Right operand.
        right: Text,
        /// `==` when true, `!=` when false.
        equal: bool,
    },
    /// `a in [..]`: the constant list's strings.
    In(Text, Vec<String>),
    /// `p && q`.
    And(Box<Fast>, Box<Fast>),
    /// `p || q`.
    Or(Box<Fast>, Box<Fast>),
    /// `!p`.
    Not(Box<Fast>),
}

impl Fast {
    /// The fast form of a rewritten expression, if it is made only of the shapes above.
    pub(crate) fn compile(e: &IdedExpr, needs: &Needs) -> Option<Fast> {
        match &e.expr {
            Expr::Literal(LiteralValue::Boolean(b)) => Some(Fast::Bool(*b.inner())),
            Expr::Call(call) if call.target.is_none() => {
                match (call.func_name.as_str(), call.args.as_slice()) {
                    (operators::LOGICAL_AND, [p, q]) => Some(Fast::And(
                        Box::new(Fast::compile(p, needs)?),
                        Box::new(Fast::compile(q, needs)?),
                    )),
                    (operators::LOGICAL_OR, [p, q]) => Some(Fast::Or(
                        Box::new(Fast::compile(p, needs)?),
                        Box::new(Fast::compile(q, needs)?),
                    )),
                    (operators::LOGICAL_NOT, [p]) => {
                        Some(Fast::Not(Box::new(Fast::compile(p, needs)?)))
                    }
                    (op @ (operators::EQUALS | operators::NOT_EQUALS), [a, b]) => {
                        Some(Fast::Compare {
                            left: Text::compile(a, needs)?,
                            right: Text::compile(b, needs)?,
                            equal: op == operators::EQUALS,
                        })
                    }
                    (operators::IN, [a, list]) => {
                        Some(Fast::In(Text::compile(a, needs)?, strings(list, needs)?))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The value of the expression on one message's slots; `None` when a slot is not the
    /// string it should be (never expected: the caller then asks the `cel` interpreter).
    pub(crate) fn eval(&self, slots: &Slots<'_, '_>) -> Option<bool> {
        Some(match self {
            Fast::Bool(b) => *b,
            Fast::Compare { left, right, equal } => {
                (left.eval(slots)? == right.eval(slots)?) == *equal
            }
            Fast::In(text, list) => {
                let text = text.eval(slots)?;
                list.iter().any(|s| s == text)
            }
            Fast::And(p, q) => p.eval(slots)? && q.eval(slots)?,
            Fast::Or(p, q) => p.eval(slots)? || q.eval(slots)?,
            Fast::Not(p) => !p.eval(slots)?,
        })
    }
}

impl Text {
    /// The string operand `e` names, if it is one.
    fn compile(e: &IdedExpr, needs: &Needs) -> Option<Text> {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => Some(Text::Literal(s.inner().to_owned())),
            Expr::Ident(name) => {
                let (kind, n) = name.strip_prefix('@')?.split_at_checked(1)?;
                let n: usize = n.parse().ok()?;
                match kind {
                    // Every key slot holds a string (`Needs::key` is only used for those).
                    "k" if n < needs.keys.len() => Some(Text::Key(n)),
                    "p" if matches!(needs.probes.get(n), Some(Probe::Field(_))) => {
                        Some(Text::Field(n))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The string on one message's slots.
    fn eval<'s>(&'s self, slots: &'s Slots<'_, '_>) -> Option<&'s str> {
        match self {
            Text::Key(n) => slots.key(*n),
            Text::Field(n) => slots
                .probe(*n)?
                .downcast_ref::<CelString>()
                .map(|s| s.inner()),
            Text::Literal(s) => Some(s),
        }
    }
}

/// The strings of a constant list (`@c{n}`) whose elements are all string literals.
fn strings(e: &IdedExpr, needs: &Needs) -> Option<Vec<String>> {
    let Expr::Ident(name) = &e.expr else {
        return None;
    };
    let n: usize = name.strip_prefix("@c")?.parse().ok()?;
    let list = needs.consts.get(n)?.downcast_ref::<CelList>()?;
    list.inner()
        .iter()
        .map(|v| v.downcast_ref::<CelString>().map(|s| s.inner().to_owned()))
        .collect()
}
