use super::*;

struct E;
impl Env for E {
    fn lookup(&self, name: &str, start: usize, end: usize) -> Result<Val, Error> {
        match name {
            "os" => Ok(Val::str("mac")),
            "n" => Ok(Val::Int(4)),
            "b" => Ok(Val::Record(Rc::new(vec![(
                "version".into(),
                Val::str("1.80"),
            )]))),
            "l" => Ok(Val::List(Rc::new(vec![Val::str("mac"), Val::str("linux")]))),
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
