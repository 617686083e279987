//! Run-time rendering of `${{ … }}` texts and evaluation of conditions over
//! build properties. The compiler has already checked every expression.

use bbc_compiler::graph::{Expr, Part, Scalar, Text};

use crate::store::Properties;

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

    fn e(s: &str) -> Expr {
        let c = bbc_compiler::compile_source(
            "t.kdl",
            format!(
                "worker \"w\" password=(secret)\"w\"\nscheduler \"f\" kind=\"force\" {{\n builders \"b\"\n param \"jobs\"\n param \"n\" type=\"int\"\n param \"clean\" type=\"bool\"\n}}\nbuilder \"b\" {{\n workers \"w\"\n steps {{\n shell \"x\" do-step-if=\"{s}\"\n }}\n}}\n"
            ),
        );
        let g = c.graph.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        g.builders[0].steps[0]
            .do_step_if
            .clone()
            .unwrap_or_else(|| panic!("no condition"))
    }

    #[test]
    fn conditions() {
        let p = props();
        let t = |s: &str| truthy(&eval(&e(s), &p));
        assert!(t("${{ prop.branch == 'main' }}"));
        assert!(!t("${{ prop.branch != 'main' }}"));
        assert!(t("${{ prop.n < 10 && prop.n >= 3 }}"));
        assert!(
            t("${{ prop.jobs == 4 }}"),
            "numeric string compares as a number"
        );
        assert!(t("${{ prop.clean == true }}"));
        assert!(t("${{ !(prop.n > 5) || false }}"));
        assert!(!t("${{ prop.reason }}"), "unset is false");
    }

    #[test]
    fn rendering() {
        let c = bbc_compiler::compile_source(
            "t.kdl",
            "worker \"w\" password=(secret)\"w\"\nscheduler \"f\" kind=\"force\" {\n builders \"b\"\n}\nbuilder \"b\" {\n workers \"w\"\n steps {\n shell \"make B=${{ prop.branch }} N=${{ prop.buildnumber }} $HOME\"\n }\n}\n",
        );
        let g = c.graph.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        let bbc_compiler::graph::StepKind::Shell {
            command: bbc_compiler::graph::Command::Shell(t),
            ..
        } = &g.builders[0].steps[0].kind
        else {
            panic!("not a shell step")
        };
        assert_eq!(render(t, &props()), "make B=main N= $HOME");
    }
}
