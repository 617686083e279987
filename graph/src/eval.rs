//! Run-time rendering of `${{ … }}` texts and evaluation of conditions over
//! build properties: the one evaluator of [`Expr`], the run-time
//! expression the compiler leaves in the graph (it has already checked
//! every expression's names and types).

use std::collections::BTreeMap;

use crate::{Expr, Part, Scalar, Text};

/// A build's properties by name.
pub type Properties = BTreeMap<String, Scalar>;

/// Renders a text with the build's properties; an unset property renders
/// as the empty string.
pub fn render(text: &Text, props: &Properties) -> String {
    let mut out = String::new();
    for part in &text.0 {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Expr(e) => out.push_str(&to_string(&eval(e, props))),
        }
    }
    out
}

fn to_string(v: &Scalar) -> String {
    v.to_string()
}

/// Evaluates an expression. Unset properties are the empty string, which
/// is false in a condition.
pub fn eval(e: &Expr, props: &Properties) -> Scalar {
    use std::cmp::Ordering;
    let cmp = |b: &[Expr; 2]| compare(&eval(&b[0], props), &eval(&b[1], props));
    match e {
        Expr::Prop(name) => props
            .get(name)
            .cloned()
            .unwrap_or(Scalar::String(String::new())),
        Expr::Lit(v) => v.clone(),
        Expr::Not(e) => Scalar::Bool(!truthy(&eval(e, props))),
        Expr::And(b) => Scalar::Bool(truthy(&eval(&b[0], props)) && truthy(&eval(&b[1], props))),
        Expr::Or(b) => Scalar::Bool(truthy(&eval(&b[0], props)) || truthy(&eval(&b[1], props))),
        Expr::Eq(b) => Scalar::Bool(cmp(b) == Some(Ordering::Equal)),
        Expr::Ne(b) => Scalar::Bool(cmp(b) != Some(Ordering::Equal)),
        Expr::Lt(b) => Scalar::Bool(cmp(b) == Some(Ordering::Less)),
        Expr::Le(b) => Scalar::Bool(matches!(cmp(b), Some(Ordering::Less | Ordering::Equal))),
        Expr::Gt(b) => Scalar::Bool(cmp(b) == Some(Ordering::Greater)),
        Expr::Ge(b) => Scalar::Bool(matches!(cmp(b), Some(Ordering::Greater | Ordering::Equal))),
        Expr::Default(_) => set(e, props).unwrap_or(Scalar::String(String::new())),
    }
}

/// The value of `e`, or `None` when it is a property that is not set (or a
/// `??` whose every side is one).
fn set(e: &Expr, props: &Properties) -> Option<Scalar> {
    match e {
        Expr::Prop(name) => props.get(name).cloned(),
        Expr::Default(b) => set(&b[0], props).or_else(|| set(&b[1], props)),
        e => Some(eval(e, props)),
    }
}

pub fn truthy(v: &Scalar) -> bool {
    match v {
        Scalar::Bool(b) => *b,
        Scalar::Int(i) => *i != 0,
        Scalar::Float(f) => *f != 0.0,
        Scalar::String(s) => !s.is_empty() && s != "false" && s != "0",
    }
}

/// Numbers compare as numbers (also when one side is a numeric string, as
/// property values from the web often are); everything else as text.
fn compare(a: &Scalar, b: &Scalar) -> Option<std::cmp::Ordering> {
    fn num(v: &Scalar) -> Option<f64> {
        match v {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) => Some(*f),
            Scalar::String(s) => s.trim().parse().ok(),
            Scalar::Bool(_) => None,
        }
    }
    match (num(a), num(b)) {
        (Some(x), Some(y)) if !matches!((a, b), (Scalar::String(_), Scalar::String(_))) => {
            x.partial_cmp(&y)
        }
        _ => Some(a.to_string().cmp(&b.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props() -> Properties {
        let mut p = Properties::new();
        p.insert("branch".into(), Scalar::String("main".into()));
        p.insert("n".into(), Scalar::Int(3));
        p.insert("jobs".into(), Scalar::String("4".into()));
        p.insert("clean".into(), Scalar::Bool(true));
        p
    }

    fn prop(n: &str) -> Expr {
        Expr::Prop(n.into())
    }
    fn lit(v: Scalar) -> Expr {
        Expr::Lit(v)
    }
    fn s(v: &str) -> Scalar {
        Scalar::String(v.into())
    }

    #[test]
    fn a_default_replaces_only_an_unset_property() {
        let mut p = props();
        p.insert("empty".into(), s(""));
        let d = |name: &str| {
            render(
                &Text(vec![crate::Part::Expr(Expr::Default(Box::new([
                    prop(name),
                    lit(s("dflt")),
                ])))]),
                &p,
            )
        };
        assert_eq!(d("branch"), "main");
        assert_eq!(d("unset"), "dflt");
        assert_eq!(d("empty"), "", "set, though empty: kept");
        assert_eq!(d("n"), "3");
    }

    #[test]
    fn conditions() {
        let p = props();
        let t = |e: Expr| truthy(&eval(&e, &p));
        assert!(t(Expr::Eq(Box::new([prop("branch"), lit(s("main"))]))));
        assert!(!t(Expr::Ne(Box::new([prop("branch"), lit(s("main"))]))));
        assert!(t(Expr::And(Box::new([
            Expr::Lt(Box::new([prop("n"), lit(Scalar::Int(10))])),
            Expr::Ge(Box::new([prop("n"), lit(Scalar::Int(3))])),
        ]))));
        assert!(
            t(Expr::Eq(Box::new([prop("jobs"), lit(Scalar::Int(4))]))),
            "numeric string compares as a number"
        );
        assert!(
            t(Expr::Lt(Box::new([lit(s("10")), lit(s("9"))]))),
            "two strings compare as text"
        );
        assert!(t(Expr::Eq(Box::new([
            prop("clean"),
            lit(Scalar::Bool(true))
        ]))));
        assert!(t(Expr::Or(Box::new([
            Expr::Not(Box::new(Expr::Gt(Box::new([
                prop("n"),
                lit(Scalar::Int(5))
            ])))),
            lit(Scalar::Bool(false)),
        ]))));
        assert!(!t(prop("reason")), "unset is false");
        assert!(!t(lit(s("0"))) && !t(lit(s("false"))) && t(lit(s("x"))));
    }

    #[test]
    fn rendering() {
        let t = Text(vec![
            Part::Lit("make B=".into()),
            Part::Expr(prop("branch")),
            Part::Lit(" N=".into()),
            Part::Expr(prop("buildnumber")),
            Part::Lit(" $HOME".into()),
        ]);
        assert_eq!(render(&t, &props()), "make B=main N= $HOME");
    }
}
