use super::*;
use crate::diagnostic::Code;
use crate::graph::{Expr, Scalar};

struct E;
impl Env for E {
    fn lookup(&self, name: &str, start: usize, end: usize) -> Result<Val, Error> {
        match name {
            "os" => Ok(Val::str("mac")),
            "n" => Ok(Val::Int(4)),
            "b" => Ok(Val::Record(Arc::new(vec![(
                "version".into(),
                Val::str("1.80"),
            )]))),
            "l" => Ok(Val::List(Arc::new(vec![
                Val::str("mac"),
                Val::str("linux"),
            ]))),
            _ => Err(unknown_name(self, name, start, end)),
        }
    }
    fn names(&self) -> Vec<String> {
        vec!["os".into(), "n".into(), "b".into(), "l".into()]
    }
    fn runtime_ok(&self) -> bool {
        true
    }
}

fn ev(s: &str) -> Result<Out, Error> {
    eval(&parse(s)?, &E)
}

#[test]
fn evaluates() {
    assert_eq!(ev("n * 2 + 1").unwrap(), Out::Val(Val::Int(9)));
    assert_eq!(ev("os in l && n >= 4").unwrap(), Out::Val(Val::Bool(true)));
    assert_eq!(ev("b.flags ?? 'x'").unwrap(), Out::Val(Val::str("x")));
    assert_eq!(ev("b.version").unwrap(), Out::Val(Val::str("1.80")));
    assert_eq!(
        ev("if os == 'mac' then 'm' else 'o'").unwrap(),
        Out::Val(Val::str("m"))
    );
    assert_eq!(ev("'a' + os").unwrap(), Out::Val(Val::str("amac")));
    assert_eq!(ev("n - 1").unwrap(), Out::Val(Val::Int(3)));
    assert_eq!(ev("-n").unwrap(), Out::Val(Val::Int(-4)));
    assert!(ev("n / 0").is_err());
    assert!(ev("os + 1").is_err());
    assert!(ev("b.flags").unwrap_err().missing);
}

#[test]
fn partial() {
    let Out::Run(e) = ev("prop.branch == os && true").unwrap() else {
        panic!()
    };
    assert_eq!(print_runtime(&e), "(prop.branch) == ('mac')");
    assert!(ev("false && prop.x == 1").is_ok());
    assert!(ev("prop.x + 1").is_err());
}

fn rt(s: &str) -> Result<Expr, Error> {
    to_runtime(&parse_runtime(s)?, s, &mut Vec::new())
}

#[test]
fn runtime_expressions_are_kept_as_written() {
    // Not folded: a run-time condition is evaluated per build as written.
    let e = rt("prop.a == 'x' && true").unwrap();
    let Expr::And(b) = e else { panic!() };
    assert_eq!(b[1], Expr::Lit(Scalar::Bool(true)));
    let mut uses = Vec::new();
    let src = "!prop.a == 'x' || prop.b < 3";
    let e = to_runtime(&parse_runtime(src).unwrap(), src, &mut uses).unwrap();
    let mut names = Vec::new();
    crate::interp::props_in(&e, &mut names);
    assert_eq!(names, ["a", "b"]);
    assert_eq!(uses.len(), 2);
    assert_eq!(&src[uses[0].start..uses[0].end], "prop.a");
}

#[test]
fn runtime_mistakes_are_the_first_in_source_order() {
    let e = rt("prop.a + 1 > 3").unwrap_err();
    assert_eq!(
        (e.message.as_str(), e.start),
        ("unexpected text in expression", 7)
    );
    let e = rt("(prop.a + 1) == 2").unwrap_err();
    assert_eq!((e.message.as_str(), e.start), ("`(` is never closed", 0));
    let e = rt("prop.a == os ?").unwrap_err();
    assert_eq!(e.message, "unknown name `os` in expression");
    assert_eq!(e.code, Code::UnknownReference);
    let e = rt("prop.a.b == 1").unwrap_err();
    assert_eq!((e.start, e.end), (0, 8));
    assert_eq!(rt("prop.").unwrap_err().end, 5);
}

#[test]
fn a_property_default_is_kept_for_run_time() {
    // `??` after a property: the default is chosen per build, and the
    // property on its left is not a use the checks require to exist.
    let src = "prop.flavour ?? 'debug'";
    let mut uses = Vec::new();
    let e = to_runtime(&parse_runtime(src).unwrap(), src, &mut uses).unwrap();
    assert_eq!(
        e,
        Expr::Default(Box::new([
            Expr::Prop("flavour".into()),
            Expr::Lit(Scalar::String("debug".into()))
        ]))
    );
    let mut names = Vec::new();
    crate::interp::props_in(&e, &mut names);
    assert!(names.is_empty() && uses.is_empty(), "{names:?}");
    // Chained, the later properties are uses.
    let src = "prop.a ?? prop.b";
    let mut uses = Vec::new();
    let e = to_runtime(&parse_runtime(src).unwrap(), src, &mut uses).unwrap();
    let mut names = Vec::new();
    crate::interp::props_in(&e, &mut names);
    assert_eq!(names, ["b"]);
    assert_eq!(&src[uses[0].start..uses[0].end], "prop.b");
    assert_eq!(print_runtime(&e), "(prop.a) ?? (prop.b)");
    // Mixed with compile-time names, evaluation keeps the default too.
    let Out::Run(e) = ev("prop.x ?? os").unwrap() else {
        panic!()
    };
    assert_eq!(print_runtime(&e), "(prop.x) ?? ('mac')");
}
