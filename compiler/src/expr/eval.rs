//! Compile-time evaluation, partial where a build property is used.

use std::sync::Arc;

use super::{Ast, Bin, Error, Kind, Val};
use crate::diagnostic::Code;
use crate::graph::{Expr, Scalar};
use crate::interp::BUILTIN_PROPERTIES;

/// Where names get their values.
pub trait Env {
    /// The value of `name`, used at `start..end` of the expression text.
    fn lookup(&self, name: &str, start: usize, end: usize) -> Result<Val, Error>;
    /// Known names, for "did you mean".
    fn names(&self) -> Vec<String>;
    /// Whether a build property may appear (run-time strings); `false`
    /// where the value is needed while compiling (`when=`, `let`, axes).
    fn runtime_ok(&self) -> bool;
}

/// The result of evaluation: a value, or a condition left for run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Val(Val),
    Run(Expr),
}

pub fn unknown_name(env: &dyn Env, name: &str, start: usize, end: usize) -> Error {
    let names = env.names();
    let (code, help) = if BUILTIN_PROPERTIES.contains(&name) && !names.iter().any(|n| n == name) {
        (
            Code::UnknownReference,
            format!("build properties are written `prop.{name}`"),
        )
    } else {
        let help = match crate::diagnostic::suggest(name, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "define it with `let {name}=…`, declare it as a template `param`, or write a build property as `prop.{name}`"
            ),
        };
        (Code::UnknownVariable, help)
    };
    Error::new(
        code,
        start,
        end,
        format!("unknown name `{name}` in expression"),
        "here",
        help,
    )
}

fn type_err(a: &Ast, msg: String, help: &str) -> Error {
    Error::new(Code::TypeMismatch, a.start, a.end, msg, "wrong type", help)
}

fn scalar(v: &Val) -> Option<Scalar> {
    match v {
        Val::Bool(b) => Some(Scalar::Bool(*b)),
        Val::Int(i) => Some(Scalar::Int(*i)),
        Val::Str(s) => Some(Scalar::String(s.to_string())),
        Val::Null => Some(Scalar::String(String::new())),
        _ => None,
    }
}

pub fn eval(a: &Ast, env: &dyn Env) -> Result<Out, Error> {
    match &a.kind {
        Kind::Lit(v) => Ok(Out::Val(v.clone())),
        Kind::Name(n) => env.lookup(n, a.start, a.end).map(Out::Val),
        Kind::Prop(p) => {
            if env.runtime_ok() {
                Ok(Out::Run(Expr::Prop(p.clone())))
            } else {
                Err(Error::new(
                    Code::NotCompileTime,
                    a.start,
                    a.end,
                    format!("`prop.{p}` is known only at run time"),
                    "a build property",
                    "this value is needed while compiling (a `when=`, `let`, matrix axis, exclusion or template argument); use `do-step-if=` for run-time conditions",
                ))
            }
        }
        Kind::Field(inner, f) => {
            let v = val(inner, env, "a field access")?;
            match &v {
                Val::Record(_) => match v.field(f) {
                    Some(x) => Ok(Out::Val(x.clone())),
                    None => {
                        let fields: Vec<&str> = match &v {
                            Val::Record(fs) => fs.iter().map(|(k, _)| k.as_str()).collect(),
                            _ => Vec::new(),
                        };
                        let mut e = Error::new(
                            Code::MissingField,
                            a.start,
                            a.end,
                            format!("the record has no field `{f}`"),
                            "no such field",
                            match crate::diagnostic::suggest(f, fields.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`? For an optional field write `… ?? default`"),
                                None => format!(
                                    "its fields are: {}; for an optional field write `… ?? default`",
                                    fields.join(", ")
                                ),
                            },
                        );
                        e.missing = true;
                        Err(e)
                    }
                },
                Val::Null => {
                    let mut e = Error::new(
                        Code::MissingField,
                        a.start,
                        a.end,
                        format!("`.{f}` of null"),
                        "the value is null",
                        "supply a default with `?? …`",
                    );
                    e.missing = true;
                    Err(e)
                }
                other => Err(type_err(
                    inner,
                    format!("`.{f}` needs a record, found {}", other.type_name()),
                    "fields exist on records (`let b { name \"x\" }` or list items `- name=\"x\"`)",
                )),
            }
        }
        Kind::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(val(i, env, "a list item")?);
            }
            Ok(Out::Val(Val::List(Arc::new(out))))
        }
        Kind::Not(inner) => match eval(inner, env)? {
            Out::Val(Val::Bool(b)) => Ok(Out::Val(Val::Bool(!b))),
            Out::Val(v) => Err(type_err(
                inner,
                format!("`!` needs a boolean, found {}", v.type_name()),
                "`!` negates a condition such as `os == 'mac'`",
            )),
            Out::Run(e) => Ok(Out::Run(Expr::Not(Box::new(e)))),
        },
        Kind::Neg(inner) => match val(inner, env, "`-`")? {
            Val::Int(i) => i
                .checked_neg()
                .map(|v| Out::Val(Val::Int(v)))
                .ok_or_else(|| overflow(a)),
            v => Err(type_err(
                inner,
                format!("`-` needs an integer, found {}", v.type_name()),
                "negate integers only",
            )),
        },
        Kind::If(b) => {
            let [c, x, y] = &**b;
            match eval(c, env)? {
                Out::Val(Val::Bool(true)) => eval(x, env),
                Out::Val(Val::Bool(false)) => eval(y, env),
                Out::Val(v) => Err(type_err(
                    c,
                    format!(
                        "the condition of `if` must be a boolean, found {}",
                        v.type_name()
                    ),
                    "write a comparison, e.g. `if os == 'mac' then … else …`",
                )),
                Out::Run(_) => Err(run_only(c, "`if`")),
            }
        }
        Kind::Bin(op, l, r) => binary(a, *op, l, r, env),
    }
}

fn overflow(a: &Ast) -> Error {
    Error::new(
        Code::Arithmetic,
        a.start,
        a.end,
        "integer overflow",
        "overflows",
        "use smaller numbers",
    )
}

fn run_only(a: &Ast, what: &str) -> Error {
    Error::new(
        Code::NotCompileTime,
        a.start,
        a.end,
        format!("{what} needs a value known while compiling"),
        "uses a build property",
        "at run time only comparisons, `!`, `&&` and `||` are available; compute the rest from compile-time values",
    )
}

fn val(a: &Ast, env: &dyn Env, what: &str) -> Result<Val, Error> {
    match eval(a, env)? {
        Out::Val(v) => Ok(v),
        Out::Run(_) => Err(run_only(a, what)),
    }
}

fn binary(a: &Ast, op: Bin, l: &Ast, r: &Ast, env: &dyn Env) -> Result<Out, Error> {
    match op {
        Bin::Coalesce => {
            return match eval(l, env) {
                Ok(Out::Val(Val::Null)) => eval(r, env),
                Err(e) if e.missing => eval(r, env),
                // A build property: the default is chosen at run time.
                Ok(Out::Run(le)) => {
                    let re = match eval(r, env)? {
                        Out::Run(e) => e,
                        Out::Val(v) => scalar(&v).map(Expr::Lit).ok_or_else(|| {
                            type_err(
                                r,
                                format!("a build property's default cannot be {}", v.type_name()),
                                "give a string, number or boolean",
                            )
                        })?,
                    };
                    Ok(Out::Run(Expr::Default(Box::new([le, re]))))
                }
                other => other,
            };
        }
        Bin::And | Bin::Or => {
            let is_and = op == Bin::And;
            let lv = eval(l, env)?;
            let want_bool = |v: &Val, side: &Ast| -> Result<bool, Error> {
                match v {
                    Val::Bool(b) => Ok(*b),
                    v => Err(type_err(
                        side,
                        format!("`{}` needs booleans, found {}", op.token(), v.type_name()),
                        "join conditions (comparisons, `in`, booleans)",
                    )),
                }
            };
            if let Out::Val(v) = &lv {
                let b = want_bool(v, l)?;
                if b != is_and {
                    // false && … / true || …: decided.
                    return Ok(Out::Val(Val::Bool(b)));
                }
                return match eval(r, env)? {
                    Out::Val(v) => Ok(Out::Val(Val::Bool(want_bool(&v, r)?))),
                    run => Ok(run),
                };
            }
            let Out::Run(le) = lv else {
                return Err(Error::silent());
            };
            let re = match eval(r, env)? {
                Out::Val(v) => {
                    // r && true / r || false is r; r && false is false,
                    // r || true is true (run-time conditions are pure).
                    let b = want_bool(&v, r)?;
                    if b == is_and {
                        return Ok(Out::Run(le));
                    }
                    return Ok(Out::Val(Val::Bool(b)));
                }
                Out::Run(e) => e,
            };
            let pair = Box::new([le, re]);
            return Ok(Out::Run(if is_and {
                Expr::And(pair)
            } else {
                Expr::Or(pair)
            }));
        }
        _ => {}
    }
    let lo = eval(l, env)?;
    let ro = eval(r, env)?;
    let (lv, rv) = match (lo, ro) {
        (Out::Val(x), Out::Val(y)) => (x, y),
        (lo, ro) => {
            // `&&` and `||` were handled above: only comparisons get here.
            let Some(mk) = op.runtime() else {
                return Err(run_only(a, &format!("`{}`", op.token())));
            };
            let side = |o: Out, ast: &Ast| -> Result<Expr, Error> {
                match o {
                    Out::Run(e) => Ok(e),
                    Out::Val(v) => scalar(&v).map(Expr::Lit).ok_or_else(|| {
                        type_err(
                            ast,
                            format!("cannot compare a build property with {}", v.type_name()),
                            "compare build properties with strings, numbers or booleans",
                        )
                    }),
                }
            };
            let le = side(lo, l)?;
            let re = side(ro, r)?;
            return Ok(Out::Run(mk(Box::new([le, re]))));
        }
    };
    let overflow = || overflow(a);
    let v = match (op, &lv, &rv) {
        (Bin::Eq, x, y) | (Bin::Ne, x, y) => {
            let comparable = std::mem::discriminant(x) == std::mem::discriminant(y)
                || matches!(x, Val::Null)
                || matches!(y, Val::Null);
            if !comparable {
                return Err(type_err(
                    a,
                    format!(
                        "`{}` compares {} with {}",
                        op.token(),
                        x.type_name(),
                        y.type_name()
                    ),
                    "compare values of the same type; quote numbers to compare them as text",
                ));
            }
            Val::Bool((x == y) == (op == Bin::Eq))
        }
        (Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge, x, y) => {
            let ord = match (x, y) {
                (Val::Int(x), Val::Int(y)) => x.cmp(y),
                (Val::Str(x), Val::Str(y)) => x.cmp(y),
                _ => {
                    return Err(type_err(
                        a,
                        format!(
                            "`{}` orders integers or strings, found {} and {}",
                            op.token(),
                            x.type_name(),
                            y.type_name()
                        ),
                        "compare two integers or two strings",
                    ))
                }
            };
            use std::cmp::Ordering::*;
            Val::Bool(match op {
                Bin::Lt => ord == Less,
                Bin::Le => ord != Greater,
                Bin::Gt => ord == Greater,
                _ => ord != Less,
            })
        }
        (Bin::In, x, Val::List(items)) => Val::Bool(items.iter().any(|i| i == x)),
        (Bin::In, Val::Str(x), Val::Str(y)) => Val::Bool(y.contains(&**x)),
        (Bin::In, _, y) => {
            return Err(type_err(
                r,
                format!("`in` needs a list on the right, found {}", y.type_name()),
                "write `x in ['a', 'b']` or `x in some_list`",
            ))
        }
        (Bin::Add, Val::Int(x), Val::Int(y)) => Val::Int(x.checked_add(*y).ok_or_else(overflow)?),
        (Bin::Add, Val::Str(x), Val::Str(y)) => Val::str(format!("{x}{y}")),
        (Bin::Add, Val::List(x), Val::List(y)) => {
            Val::List(Arc::new(x.iter().chain(y.iter()).cloned().collect()))
        }
        (Bin::Add, x, y) => {
            return Err(type_err(
                a,
                format!("`+` cannot add {} and {}", x.type_name(), y.type_name()),
                "`+` adds integers, joins strings or joins lists; to put a number in a string write `'v' + \"${{…}}\"` or interpolate both",
            ))
        }
        (Bin::Sub | Bin::Mul | Bin::Div | Bin::Rem, Val::Int(x), Val::Int(y)) => {
            let (x, y) = (*x, *y);
            if matches!(op, Bin::Div | Bin::Rem) && y == 0 {
                return Err(Error::new(
                    Code::Arithmetic,
                    r.start,
                    r.end,
                    "division by zero",
                    "is zero",
                    "divide by a number that is not zero",
                ));
            }
            Val::Int(
                match op {
                    Bin::Sub => x.checked_sub(y),
                    Bin::Mul => x.checked_mul(y),
                    Bin::Div => x.checked_div(y),
                    _ => x.checked_rem(y),
                }
                .ok_or_else(overflow)?,
            )
        }
        (_, x, y) => {
            return Err(type_err(
                a,
                format!(
                    "`{}` needs integers, found {} and {}",
                    op.token(),
                    x.type_name(),
                    y.type_name()
                ),
                "arithmetic works on integers",
            ))
        }
    };
    Ok(Out::Val(v))
}
