//! Validation rules and connector filters: CEL expressions over a parsed message, sans IO.
//!
//! [`RuleSet::compile`] compiles a list of [`RuleSpec`] once (at start or on reload): every
//! name, key and function is checked, each error names the rule and its line and column, and
//! one walk over each compiled expression records which variables, keys and fields it reads.
//! [`RuleSet::evaluate`] then runs the rules in order on one [`Message`] and returns a
//! [`Verdict`]: the first failing rule decides; an expression that errors (wrong type, bad
//! conversion, a result that is not a bool) is an [`Verdict::EvalError`], never a panic. Per
//! message only what the rules read is extracted; with no rules nothing is. A [`Filter`] is
//! one expression → bool over the same variables, for connectors.
//!
//! The variables and functions are described in `vars.rs` and in the README section
//! "Validation rules (CEL)". Evaluation errors never quote message content (patient data):
//! their reasons name types and functions only.

mod compile;
mod fast;
mod vars;

use std::fmt;
use std::sync::Arc;

use cel::common::ast::IdedExpr;
use cel::{ExecutionError, Value};
use serde::Deserialize;

use crate::hl7::{ErrorCode, Location, Message, Path};
use crate::limits;
use fast::Fast;
pub use vars::MessageContext;
use vars::{KeyPaths, Needs, Slots};

/// What a failed rule answers: AR (application reject, the default: the message is wrong and
/// resending it will not help) or AE (application error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum OnFail {
    /// Application reject.
    #[default]
    AR,
    /// Application error.
    AE,
}

/// One rule as configured (`validation: {rules: [...]}`); unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name, shown in ERR and logs.
    pub name: String,
    /// CEL expression that must be true for a message to pass.
    pub expression: String,
    /// Text sent in MSA-3 / ERR when the rule fails.
    pub message: String,
    /// ACK code when the rule fails.
    #[serde(default)]
    pub on_fail: OnFail,
    /// HL7 table 0357 error code for ERR-3 (default 207, application internal error).
    #[serde(default = "default_code")]
    pub code: u16,
    /// HL7 path of the field at fault for ERR-2 (`PID-3`); when absent, the first field the
    /// expression reads.
    #[serde(default)]
    pub location: Option<String>,
}

/// The `validation:` section of a configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// The rules, run in order.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// Code 207 (application internal error), the default ERR-3 of a failed rule.
fn default_code() -> u16 {
    ErrorCode::ApplicationInternalError.as_u16()
}

/// The table 0357 error code numbered `code`, if it is one a rule may use (not 0, "accepted").
fn error_code(code: u16) -> Option<ErrorCode> {
    use ErrorCode::*;
    [
        SegmentSequenceError,
        RequiredFieldMissing,
        DataTypeError,
        TableValueNotFound,
        UnsupportedMessageType,
        UnsupportedEventCode,
        UnsupportedProcessingId,
        UnsupportedVersionId,
        UnknownKeyIdentifier,
        DuplicateKeyIdentifier,
        ApplicationRecordLocked,
        ApplicationInternalError,
    ]
    .into_iter()
    .find(|c| c.as_u16() == code)
}

/// Bounds on what may be compiled (the defaults are in `limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulesOptions {
    /// Most rules in one set.
    pub rules_max: usize,
    /// Longest expression, in bytes.
    pub expression_bytes_max: usize,
    /// Longest rule name or message, in bytes.
    pub text_bytes_max: usize,
}

impl Default for RulesOptions {
    fn default() -> Self {
        RulesOptions {
            rules_max: limits::RULES_MAX,
            expression_bytes_max: limits::RULE_EXPRESSION_BYTES_MAX,
            text_bytes_max: limits::RULE_TEXT_BYTES_MAX,
        }
    }
}

/// Why a rule set (or filter) was refused at load. Every variant names the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// More rules than `rules_max`.
    #[error("{count} validation rules, at most {max} allowed")]
    TooManyRules {
        /// Rules given.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An expression longer than `expression_bytes_max`.
    #[error("rule '{rule}': expression of {bytes} bytes, at most {max} allowed")]
    TooLong {
        /// The rule's name.
        rule: String,
        /// Its length.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The expression does not compile, or names an unknown variable or function.
    #[error("rule '{rule}': line {line}, column {column}: {message}")]
    Compile {
        /// The rule's name.
        rule: String,
        /// 1-based line of the error in the expression (0 when unknown).
        line: u32,
        /// 1-based column (characters) of the error (0 when unknown).
        column: u32,
        /// What is wrong.
        message: String,
    },
    /// Something else about the rule is wrong (name, code, location, message).
    #[error("rule '{rule}': {message}")]
    Invalid {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        message: String,
    },
}

/// One compiled rule.
#[derive(Clone, Debug)]
struct Rule {
    /// Name, as configured.
    name: String,
    /// Failure text.
    message: String,
    /// ACK code on failure.
    on_fail: OnFail,
    /// ERR-3 code on failure.
    code: ErrorCode,
    /// ERR-2 location on failure.
    location: Option<Location>,
    /// The rewritten expression.
    expr: IdedExpr,
    /// The same, for the direct evaluator, when it has only the shapes that one knows.
    fast: Option<Fast>,
}

/// The outcome of running the rules on one message.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict<'r> {
    /// Every rule held.
    Pass,
    /// A rule was false: the first one decides.
    Fail(Failure<'r>),
    /// A rule could not be evaluated (the caller answers AE).
    EvalError {
        /// Index of the rule in the configured order.
        index: usize,
        /// The rule's name.
        rule: &'r str,
        /// Why, without message content.
        reason: String,
    },
}

/// The rule that failed and what to answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure<'r> {
    /// Index of the rule in the configured order.
    pub index: usize,
    /// The rule's name.
    pub rule: &'r str,
    /// AR or AE.
    pub on_fail: OnFail,
    /// Table 0357 code for ERR-3.
    pub code: ErrorCode,
    /// The rule's message, for MSA-3 and ERR (escaped by the ACK builder).
    pub message: &'r str,
    /// ERR-2: the configured location, else the first field the rule reads.
    pub location: Option<Location>,
}

/// What the expressions of a rule set or filter read, shared by both.
#[derive(Debug)]
struct Program {
    /// What every expression reads: the hidden variables' slots.
    needs: Needs,
    /// Parsed key paths.
    paths: KeyPaths,
}

impl Program {
    /// Nothing read yet.
    fn new() -> Program {
        Program {
            needs: Needs::default(),
            paths: KeyPaths::new(),
        }
    }

    /// Extracts what the expressions read from `message`, then runs `run` with an
    /// [`Evaluator`] over them.
    fn with_context<'m, T>(
        &self,
        message: &Message<'m>,
        connection: &MessageContext<'m>,
        run: impl FnOnce(&mut Evaluator<'_, '_, '_>) -> T,
    ) -> T {
        let slots = vars::extract(&self.needs, &self.paths, message, connection);
        let mut evaluator = Evaluator {
            slots: &slots,
            context: None,
            cel_only: false,
        };
        run(&mut evaluator)
    }
}

/// Runs expressions on one message's extracted values: the direct evaluator where it applies,
/// else the `cel` interpreter, whose context is built on first use only.
struct Evaluator<'s, 'r, 'm> {
    /// The message's values.
    slots: &'s Slots<'r, 'm>,
    /// The `cel` context over them, once an expression needed it.
    context: Option<cel::Context<'s, 's>>,
    /// Use the `cel` interpreter for every expression (tests compare the two).
    cel_only: bool,
}

impl Evaluator<'_, '_, '_> {
    /// Runs one expression: `Ok(bool)` or the reason it could not be evaluated.
    fn run(&mut self, expr: &IdedExpr, fast: Option<&Fast>) -> Result<bool, String> {
        if !self.cel_only {
            if let Some(b) = fast.and_then(|f| f.eval(self.slots)) {
                return Ok(b);
            }
        }
        let slots = self.slots;
        let context = self.context.get_or_insert_with(|| {
            let mut context = cel::Context::with_env(Arc::clone(&compile::ENV));
            context.set_variable_resolver(slots);
            context
        });
        run(expr, context)
    }
}

/// Compiles one expression of rule `rule`, bounded by `options`.
fn compile_one(
    rule: &str,
    expression: &str,
    options: &RulesOptions,
    needs: &mut Needs,
) -> Result<(compile::Compiled, Option<Fast>), RuleError> {
    if expression.len() > options.expression_bytes_max {
        return Err(RuleError::TooLong {
            rule: rule.to_owned(),
            bytes: expression.len(),
            max: options.expression_bytes_max,
        });
    }
    let compiled = compile::compile(expression, needs).map_err(|e| RuleError::Compile {
        rule: rule.to_owned(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let fast = Fast::compile(&compiled.expr, needs);
    Ok((compiled, fast))
}

/// Runs one expression: `Ok(bool)` or the reason it could not be evaluated.
fn run(expr: &IdedExpr, context: &cel::Context<'_, '_>) -> Result<bool, String> {
    match Value::resolve(expr, context) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "the expression gave a {}, not a bool",
            type_name(&other)
        )),
        Err(e) => Err(reason(&e)),
    }
}

/// The CEL type name of a value, for error text.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "duration",
        Value::Timestamp(_) => "timestamp",
        Value::Opaque(_) => "opaque",
        Value::Struct(_) => "struct",
        Value::Null => "null",
    }
}

/// The reason of an evaluation error, without the values involved (they may be patient
/// data): only types, functions and keys.
fn reason(error: &ExecutionError) -> String {
    match error {
        ExecutionError::InvalidArgumentCount { expected, actual } => {
            format!("wrong number of arguments: {actual}, expected {expected}")
        }
        ExecutionError::UnsupportedTargetType { target } => {
            format!("unsupported target of type {}", type_name(target))
        }
        ExecutionError::NotSupportedAsMethod { method, target } => {
            format!("{method}() is not a method of {}", type_name(target))
        }
        ExecutionError::UnsupportedKeyType(v) => {
            format!("a {} cannot be a map key", type_name(v))
        }
        ExecutionError::UnexpectedType { got, want } => {
            format!("wrong type: got {got}, want {want}")
        }
        ExecutionError::NoSuchKey(key) => format!("no such key: {key}"),
        ExecutionError::NoSuchOverload(overload) => overload.to_string(),
        ExecutionError::UndeclaredReference(name) => format!("undeclared reference to {name}"),
        ExecutionError::MissingArgumentOrTarget => "missing argument or target".to_owned(),
        ExecutionError::ValuesNotComparable(a, b) => format!(
            "a {} cannot be compared to a {}",
            type_name(a),
            type_name(b)
        ),
        ExecutionError::UnsupportedBinaryOperator(op, a, b) => format!(
            "operator {op} does not apply to {} and {}",
            type_name(a),
            type_name(b)
        ),
        ExecutionError::UnsupportedIndex(index, target) => format!(
            "a {} cannot index a {}",
            type_name(index),
            type_name(target)
        ),
        // The function's own message may quote its argument (`int("DOE")`): name only.
        ExecutionError::FunctionError { function, .. } => {
            format!("{function}() failed on its argument (bad conversion or value)")
        }
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "remainder by zero".to_owned(),
        ExecutionError::Overflow(op, ..) => format!("overflow in {op}"),
        ExecutionError::IndexOutOfBounds(_) => "index out of bounds".to_owned(),
        ExecutionError::DuplicateKey(_) => "duplicate map key".to_owned(),
        ExecutionError::InternalError(_) => "internal error of the CEL interpreter".to_owned(),
        _ => "evaluation error".to_owned(),
    }
}

/// Compiled validation rules, ready to judge messages. Cheap to share (`Arc`) between shards.
#[derive(Debug)]
pub struct RuleSet {
    /// The rules in order.
    rules: Vec<Rule>,
    /// What they read, together.
    program: Program,
}

impl RuleSet {
    /// A rule set with no rules: every message passes and nothing is extracted.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            program: Program::new(),
        }
    }

    /// Compiles `specs` in order; the first bad rule refuses the whole set.
    pub fn compile(specs: &[RuleSpec], options: &RulesOptions) -> Result<RuleSet, RuleError> {
        if specs.len() > options.rules_max {
            return Err(RuleError::TooManyRules {
                count: specs.len(),
                max: options.rules_max,
            });
        }
        let mut set = RuleSet::empty();
        for (i, spec) in specs.iter().enumerate() {
            let invalid = |message: String| RuleError::Invalid {
                rule: spec.name.clone(),
                message,
            };
            if spec.name.trim().is_empty() {
                return Err(RuleError::Invalid {
                    rule: format!("#{}", i + 1),
                    message: "a rule needs a name".to_owned(),
                });
            }
            if set.rules.iter().any(|r| r.name == spec.name) {
                return Err(invalid("two rules have this name".to_owned()));
            }
            for (what, text) in [("name", &spec.name), ("message", &spec.message)] {
                if text.len() > options.text_bytes_max {
                    return Err(invalid(format!(
                        "{what} of {} bytes, at most {} allowed",
                        text.len(),
                        options.text_bytes_max
                    )));
                }
            }
            let code = error_code(spec.code).ok_or_else(|| {
                invalid(format!(
                    "code {} is not an error code of HL7 table 0357 (100-103, 200-207)",
                    spec.code
                ))
            })?;
            let configured = match &spec.location {
                None => None,
                Some(text) => Some(
                    text.parse::<Path>()
                        .map(|p| vars::path_location(&p))
                        .map_err(|_| invalid(format!("location '{text}' is not an HL7 path")))?,
                ),
            };
            let (compiled, fast) = compile_one(
                &spec.name,
                &spec.expression,
                options,
                &mut set.program.needs,
            )?;
            set.rules.push(Rule {
                name: spec.name.clone(),
                message: spec.message.clone(),
                on_fail: spec.on_fail,
                code,
                location: configured.or(compiled.location),
                expr: compiled.expr,
                fast,
            });
        }
        Ok(set)
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What is extracted from each message (`msh.msg_type`, `field(PID-3.1)` …): exactly
    /// what the rules read, nothing for no rules.
    pub fn reads(&self) -> Vec<String> {
        self.program.needs.describe()
    }

    /// The name of rule `index` (in the configured order), if there is one.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.rules.get(index).map(|r| r.name.as_str())
    }

    /// What rule `index` answers when it fails, if there is such a rule: what
    /// [`RuleSet::evaluate`] returns in [`Verdict::Fail`], for a caller that kept only the index.
    pub fn failure(&self, index: usize) -> Option<Failure<'_>> {
        self.rules.get(index).map(|rule| Failure {
            index,
            rule: &rule.name,
            on_fail: rule.on_fail,
            code: rule.code,
            message: &rule.message,
            location: rule.location,
        })
    }

    /// Runs the rules in order on `message`; the first that fails or errors decides.
    pub fn evaluate<'r>(
        &'r self,
        message: &Message<'_>,
        connection: &MessageContext<'_>,
    ) -> Verdict<'r> {
        self.evaluate_with(message, connection, false)
    }

    /// [`RuleSet::evaluate`], with every rule run by the `cel` interpreter when `cel_only`.
    fn evaluate_with<'r>(
        &'r self,
        message: &Message<'_>,
        connection: &MessageContext<'_>,
        cel_only: bool,
    ) -> Verdict<'r> {
        if self.rules.is_empty() {
            return Verdict::Pass;
        }
        self.program.with_context(message, connection, |evaluator| {
            evaluator.cel_only = cel_only;
            for (index, rule) in self.rules.iter().enumerate() {
                match evaluator.run(&rule.expr, rule.fast.as_ref()) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Verdict::Fail(Failure {
                            index,
                            rule: &rule.name,
                            on_fail: rule.on_fail,
                            code: rule.code,
                            message: &rule.message,
                            location: rule.location,
                        })
                    }
                    Err(reason) => {
                        return Verdict::EvalError {
                            index,
                            rule: &rule.name,
                            reason,
                        }
                    }
                }
            }
            Verdict::Pass
        })
    }
}

// Rule sets and filters are compiled off the shards and shared with them (`Arc`), and swapped
// on reload: they must be Send + Sync.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<RuleSet>();
    shared::<Filter>();
};

/// One CEL expression deciding whether a message goes somewhere (a connector's `filter`).
#[derive(Debug)]
pub struct Filter {
    /// The rewritten expression.
    expr: IdedExpr,
    /// The same, for the direct evaluator, when it has only the shapes that one knows.
    fast: Option<Fast>,
    /// What it reads.
    program: Program,
}

/// Why a filter could not decide on a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// Why, without message content.
    pub reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for FilterError {}

impl Filter {
    /// Compiles `expression`; errors are named `name` (the connector's name).
    pub fn compile(
        name: &str,
        expression: &str,
        options: &RulesOptions,
    ) -> Result<Filter, RuleError> {
        let mut program = Program::new();
        let (compiled, fast) = compile_one(name, expression, options, &mut program.needs)?;
        Ok(Filter {
            expr: compiled.expr,
            fast,
            program,
        })
    }

    /// What is extracted from each message, as [`RuleSet::reads`].
    pub fn reads(&self) -> Vec<String> {
        self.program.needs.describe()
    }

    /// Whether `message` matches.
    pub fn matches(
        &self,
        message: &Message<'_>,
        connection: &MessageContext<'_>,
    ) -> Result<bool, FilterError> {
        self.program
            .with_context(message, connection, |evaluator| {
                evaluator.run(&self.expr, self.fast.as_ref())
            })
            .map_err(|reason| FilterError { reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::ParseOptions;

    const ADT: &str = include_str!("../../tests/data/adt_a01_316.hl7");

    /// Expressions of the direct evaluator's shapes (each must take it) …
    const FAST: &[&str] = &[
        r#"pid.id != """#,
        r#"pid.id == "100234""#,
        r#"msh.msg_type in ["ADT", "ORU", "ORM", "SIU"]"#,
        r#"msh.sending_fac in ["NORTHGATE", "RIVERSIDE", "EASTFIELD", "BENCHFAC"]"#,
        r#"msh.sending_fac in ["RIVERSIDE", "EASTFIELD"]"#,
        r#"pv1.patient_class != "I" || field("PV1-3.3") != """#,
        r#"pv1.patient_class == "I" && field("PV1-3.3") == "B""#,
        r#"!(msh.trigger == "A01") || pid.sex in ["F", "M", "U"]"#,
        r#"field("PV1-3.3") in ["A", "B"] && true"#,
        r#"false || msh.sending_fac == field("MSH-4.1")"#,
        r#""ADT" in ["ADT", "ORU"]"#,
        r#""x" == "x" && !false"#,
        r#"pid.name == "HARTLEY^MARGARET^ANNE""#,
        r#"msh.control_id != "" && msh.control_id == msh.control_id"#,
    ];

    /// … and expressions that are not, left to the `cel` interpreter.
    const CEL: &[&str] = &[
        r#"msh.msg_type in ["ADT"]"#,
        r#"msh.msg_type in ["ADT", 1]"#,
        r#"msh.msg_type == 1"#,
        r#"msh.msg_type in {"ADT": 1, "ORU": 2}"#,
        r#"size(pid.id) > 2 || pid.id != """#,
        r#"fields("PID-3.1") == ["100234", "555-12-3456"]"#,
        r#"has("PV1") && count("OBX") == 0"#,
        r#"pid.id || true"#,
        r#"msh.sending_fac.startsWith("NORTH")"#,
    ];

    /// The fixture and variants that change what the expressions above read.
    fn messages() -> Vec<String> {
        vec![
            ADT.to_owned(),
            ADT.replace("|100234^", "|^"),
            ADT.replace("ADT^A01^ADT_A01", "ORU^R01"),
            ADT.replace("ADT^A01^ADT_A01", "QRY^A19"),
            ADT.replace("|NORTHGATE|", "||"),
            ADT.replace("|NORTHGATE|", "|RIVERSIDE|"),
            ADT.replace("|NORTHGATE|", r"|NORTH\F\GATE|"),
            ADT.replace("|4W^412^B^NG|", "|4W^412|"),
            ADT.replace("|4W^412^B^NG|", "|4W^412^A^NG|"),
            ADT.replace("PV1|1|I|", "PV1|1|O|"),
            ADT.replace("|F|||", "|X|||"),
            ADT.replace("ADT^A01^ADT_A01", "ADT^A04^ADT_A01"),
            ADT.split("\rPV1").next().unwrap_or(ADT).to_owned(),
        ]
    }

    fn rule_set(expression: &str) -> RuleSet {
        let spec = RuleSpec {
            name: "r".to_owned(),
            expression: expression.to_owned(),
            message: "failed".to_owned(),
            on_fail: OnFail::AR,
            code: 207,
            location: None,
        };
        RuleSet::compile(&[spec], &RulesOptions::default()).expect("compiles")
    }

    #[test]
    fn the_direct_evaluator_gives_the_verdicts_of_cel() {
        let messages = messages();
        let (mut passes, mut fails) = (0, 0);
        for (expressions, fast) in [(FAST, true), (CEL, false)] {
            for expression in expressions {
                let set = rule_set(expression);
                assert_eq!(set.rules[0].fast.is_some(), fast, "{expression}");
                for text in &messages {
                    let message =
                        Message::parse(text.as_bytes(), &ParseOptions::default()).expect("parses");
                    let context = MessageContext::default();
                    let direct = set.evaluate_with(&message, &context, false);
                    let cel = set.evaluate_with(&message, &context, true);
                    assert_eq!(direct, cel, "{expression} on {text:?}");
                    match direct {
                        Verdict::Pass => passes += 1,
                        Verdict::Fail(_) => fails += 1,
                        Verdict::EvalError { .. } => {}
                    }
                }
            }
        }
        // The messages make the expressions both pass and fail, so a wrong answer shows.
        assert!(passes > 30 && fails > 30, "{passes} passes, {fails} fails");
    }

    #[test]
    fn a_filter_takes_the_direct_evaluator_too() {
        let filter = Filter::compile(
            "c",
            r#"msh.msg_type in ["ADT", "ORU"] && pid.id != """#,
            &RulesOptions::default(),
        )
        .expect("compiles");
        assert!(filter.fast.is_some());
        for (text, want) in [
            (ADT.to_owned(), true),
            (ADT.replace("ADT^A01^ADT_A01", "ORM^O01"), false),
            (ADT.replace("|100234^", "|^"), false),
        ] {
            let message =
                Message::parse(text.as_bytes(), &ParseOptions::default()).expect("parses");
            assert_eq!(
                filter.matches(&message, &MessageContext::default()),
                Ok(want)
            );
        }
    }
}
