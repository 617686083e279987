//! Numbers: decimal, hexadecimal, octal and binary integers and floats.

use super::*;

impl Lexer<'_> {
    /// Validates and converts a word that starts like a number.
    pub(super) fn number(&mut self, start: usize, end: usize) -> Tok {
        let text = self.slice(start, end);
        let (negative, body) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let radix = match body.as_bytes() {
            [b'0', b'x', ..] => Some((16, "a hexadecimal")),
            [b'0', b'o', ..] => Some((8, "an octal")),
            [b'0', b'b', ..] => Some((2, "a binary")),
            _ => None,
        };
        if let Some((radix, name)) = radix {
            let digits = &body[2..];
            let first_ok = digits.chars().next().is_some_and(|c| c.is_digit(radix));
            let bad = digits
                .char_indices()
                .find(|&(_, c)| !(c == '_' || c.is_digit(radix)));
            if !first_ok || bad.is_some() {
                let label = match (digits.chars().next(), bad) {
                    (None, _) => "no digits after the prefix".to_owned(),
                    (Some('_'), _) => "`_` cannot come right after the prefix".to_owned(),
                    (_, Some((_, c))) => format!("`{c}` is not {name} digit"),
                    _ => format!("not {name} number"),
                };
                self.push(error(
                    start,
                    end,
                    format!(
                        "invalid {} number `{text}`",
                        name.split_once(' ').map_or(name, |x| x.1)
                    ),
                    Some(&label),
                    Some("if this is meant as text, quote it as a string".to_owned()),
                ));
                return Tok::Invalid;
            }
            return self.integer(start, end, negative, digits, radix);
        }
        match decimal_shape(body.as_bytes()) {
            Ok(false) => self.integer(start, end, negative, body, 10),
            Ok(true) => {
                let parsed = if text.contains('_') {
                    text.replace('_', "").parse::<f64>()
                } else {
                    text.parse::<f64>()
                };
                match parsed {
                    Ok(f) => Tok::Num(Value::Float(f)),
                    Err(_) => {
                        self.push(error(
                            start,
                            end,
                            format!("invalid number `{text}`"),
                            Some("invalid number"),
                            None,
                        ));
                        Tok::Invalid
                    }
                }
            }
            Err(label) => {
                let numeric = body.bytes().all(|b| {
                    b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'e' | b'E' | b'+' | b'-')
                });
                if numeric {
                    self.push(error(
                        start,
                        end,
                        format!("invalid number `{text}`"),
                        Some(label),
                        None,
                    ));
                } else {
                    self.push(error(
                        start,
                        end,
                        "identifier cannot start with a digit; quote it as a string",
                        Some("neither a number nor an identifier"),
                        Some(format!("write \"{text}\"")),
                    ));
                }
                Tok::Invalid
            }
        }
    }

    fn integer(
        &mut self,
        start: usize,
        end: usize,
        negative: bool,
        digits: &str,
        radix: u32,
    ) -> Tok {
        let mut mag: u128 = 0;
        let mut overflow = false;
        for c in digits.chars() {
            let Some(d) = c.to_digit(radix) else { continue };
            match mag
                .checked_mul(radix as u128)
                .and_then(|m| m.checked_add(d as u128))
            {
                Some(m) => mag = m,
                None => {
                    overflow = true;
                    break;
                }
            }
        }
        let limit = if negative {
            1u128 << 127
        } else {
            i128::MAX as u128
        };
        if overflow || mag > limit {
            self.push(error(
                start,
                end,
                "integer too large",
                Some("does not fit in a 128-bit signed integer"),
                Some(
                    "write it as a quoted string if it is an identifier rather than a quantity"
                        .to_owned(),
                ),
            ));
            return Tok::Invalid;
        }
        // `mag as i128` wraps 2^127 to i128::MIN, whose negation is itself:
        // exactly the value wanted for the most negative integer.
        let v = if negative {
            (mag as i128).wrapping_neg()
        } else {
            mag as i128
        };
        Tok::Num(Value::Integer(v))
    }
}

/// Checks a decimal number (sign already removed) against
/// `integer ('.' integer)? (('e' | 'E') sign? integer)?` where
/// `integer := digit (digit | '_')*`. `Ok(true)` for a float, `Ok(false)`
/// for an integer, `Err` with what is wrong otherwise.
fn decimal_shape(bytes: &[u8]) -> Result<bool, &'static str> {
    let integer = |i: &mut usize| -> bool {
        if !bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        while bytes
            .get(*i)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'_')
        {
            *i += 1;
        }
        true
    };
    let mut i = 0;
    integer(&mut i);
    let mut float = false;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        float = true;
        if !integer(&mut i) {
            return Err("a decimal point must be followed by a digit");
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        float = true;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !integer(&mut i) {
            return Err("an exponent needs at least one digit");
        }
    }
    if i != bytes.len() {
        return Err("unexpected characters in number");
    }
    Ok(float)
}
