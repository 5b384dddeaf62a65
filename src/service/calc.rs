//! `calc`: evaluates one arithmetic expression per line (seed 004's calc
//! server): `+ - * / % ^`, parentheses, unary minus, integers and decimals.
//!
//! Integers stay exact (128-bit) while they can: `7 / 2` is `3.5` but
//! `8 / 2` is `4`, `2 ^ 100` is exact. Anything with a decimal point, or an
//! integer result that would overflow, is a float, printed as Python prints
//! one (`3.0`, `1e+300` becomes `1e300`). `%` follows Python: the result has
//! the sign of the divisor. Errors are `ERR <reason>` and the connection
//! stays usable.
//!
//! A recursive-descent parser by hand: the grammar is a dozen lines, and a
//! parser crate would hide the lesson's size. Nesting is capped so that a
//! peer's `((((...` cannot overflow the serving thread's stack.

use std::fmt;

use super::{Now, Protocol, Replies};

pub struct Calc;

impl Protocol for Calc {
    fn message(&mut self, msg: &[u8], _now: Now, out: &mut Replies) {
        let Ok(text) = std::str::from_utf8(msg) else {
            return out.error("invalid UTF-8");
        };
        if text.trim().is_empty() {
            return out.error("empty expression");
        }
        match evaluate(text) {
            Ok(value) => out.send_fmt(format_args!("{value}")),
            Err(e) => out.error(e),
        }
    }
}

/// How deep parentheses and unary signs may nest.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
}

impl Value {
    fn float(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            // Debug is Rust's shortest round-trip form: `3.5`, `3.0`, `1e300`.
            Value::Float(x) => write!(f, "{x:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("overflow")]
    Overflow,
    #[error("syntax error at column {column}: {what}")]
    Syntax { column: usize, what: String },
    #[error("no real result")]
    NoRealResult,
    #[error("too deeply nested (at most {MAX_DEPTH} levels)")]
    TooDeep,
}

/// Evaluates one expression.
pub fn evaluate(text: &str) -> Result<Value, CalcError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let value = parser.expression()?;
    parser.skip_spaces();
    if parser.pos < parser.bytes.len() {
        return Err(parser.syntax("unexpected input"));
    }
    Ok(value)
}

/// expression := term (('+' | '-') term)*
/// term       := unary (('*' | '/' | '%') unary)*
/// unary      := ('-' | '+') unary | power   so -2 ^ 2 is -(2 ^ 2), as in Python
/// power      := atom ('^' unary)?           right-associative: 2 ^ 3 ^ 2 is 2 ^ 9
/// atom       := number | '(' expression ')'
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn expression(&mut self) -> Result<Value, CalcError> {
        let mut value = self.term()?;
        while let Some(op) = self.eat_one_of(b"+-") {
            let rhs = self.term()?;
            value = apply(op, value, rhs)?;
        }
        Ok(value)
    }

    fn term(&mut self) -> Result<Value, CalcError> {
        let mut value = self.unary()?;
        while let Some(op) = self.eat_one_of(b"*/%") {
            let rhs = self.unary()?;
            value = apply(op, value, rhs)?;
        }
        Ok(value)
    }

    fn unary(&mut self) -> Result<Value, CalcError> {
        match self.eat_one_of(b"-+") {
            Some(b'-') => apply(b'-', Value::Int(0), self.nested(Self::unary)?),
            Some(_) => self.nested(Self::unary),
            None => self.power(),
        }
    }

    fn power(&mut self) -> Result<Value, CalcError> {
        let base = self.atom()?;
        if self.eat_one_of(b"^").is_some() {
            let exponent = self.nested(Self::unary)?;
            return apply(b'^', base, exponent);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Value, CalcError> {
        self.skip_spaces();
        match self.bytes.get(self.pos) {
            Some(b'(') => {
                self.pos += 1;
                let value = self.nested(Self::expression)?;
                if self.eat_one_of(b")").is_none() {
                    return Err(self.syntax("expected ')'"));
                }
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || *c == b'.' => self.number(),
            Some(_) => Err(self.syntax("expected a number or '('")),
            None => Err(self.syntax("unexpected end of expression")),
        }
    }

    fn number(&mut self) -> Result<Value, CalcError> {
        let start = self.pos;
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
        {
            self.pos += 1;
        }
        // Only ASCII digits and dots were consumed, so this is valid UTF-8.
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or_default();
        if !text.contains('.') {
            if let Ok(i) = text.parse::<i128>() {
                return Ok(Value::Int(i));
            }
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Value::Float(f)),
            _ => Err(CalcError::Syntax {
                column: start + 1,
                what: format!("'{text}' is not a number"),
            }),
        }
    }

    /// Runs `f` one nesting level deeper, refusing past [`MAX_DEPTH`].
    fn nested(&mut self, f: fn(&mut Self) -> Result<Value, CalcError>) -> Result<Value, CalcError> {
        if self.depth >= MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        self.depth += 1;
        let value = f(self);
        self.depth -= 1;
        value
    }

    fn eat_one_of(&mut self, ops: &[u8]) -> Option<u8> {
        self.skip_spaces();
        let c = *self.bytes.get(self.pos)?;
        ops.contains(&c).then(|| {
            self.pos += 1;
            c
        })
    }

    fn skip_spaces(&mut self) {
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn syntax(&self, what: &str) -> CalcError {
        CalcError::Syntax {
            column: self.pos + 1,
            what: what.to_string(),
        }
    }
}

fn apply(op: u8, a: Value, b: Value) -> Result<Value, CalcError> {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        if let Some(exact) = apply_int(op, x, y)? {
            return Ok(Value::Int(exact));
        }
    }
    let (x, y) = (a.float(), b.float());
    let result = match op {
        b'+' => x + y,
        b'-' => x - y,
        b'*' => x * y,
        b'/' if y == 0.0 => return Err(CalcError::DivisionByZero),
        b'/' => x / y,
        b'%' if y == 0.0 => return Err(CalcError::DivisionByZero),
        b'%' => x - y * (x / y).floor(),
        _ => x.powf(y),
    };
    if result.is_finite() {
        Ok(Value::Float(result))
    } else if x.is_finite() && y.is_finite() && result.is_nan() {
        // `(-8) ^ 0.5`: no real answer.
        Err(CalcError::NoRealResult)
    } else {
        Err(CalcError::Overflow)
    }
}

/// Exact integer arithmetic; `None` when the answer is not an integer (or
/// does not fit) and floats must take over.
fn apply_int(op: u8, x: i128, y: i128) -> Result<Option<i128>, CalcError> {
    Ok(match op {
        b'+' => x.checked_add(y),
        b'-' => x.checked_sub(y),
        b'*' => x.checked_mul(y),
        b'/' if y == 0 => return Err(CalcError::DivisionByZero),
        b'/' => (x.checked_rem(y) == Some(0)).then(|| x / y),
        b'%' if y == 0 => return Err(CalcError::DivisionByZero),
        // Python's modulo: the result takes the divisor's sign.
        b'%' => x
            .checked_rem(y)
            .map(|r| if r != 0 && (r < 0) != (y < 0) { r + y } else { r }),
        _ => u32::try_from(y).ok().and_then(|e| x.checked_pow(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::framing::Framing;
    use crate::service::tests::Harness;
    use crate::service::ServiceKind;

    fn calc(s: &str) -> String {
        match evaluate(s) {
            Ok(v) => v.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(calc("1 + 2 * 3"), "7");
        assert_eq!(calc("(1 + 2) * 3"), "9");
        assert_eq!(calc("2 ^ 3 ^ 2"), "512");
        assert_eq!(calc("-2 ^ 2"), "-4");
        assert_eq!(calc("(-2) ^ 2"), "4");
        assert_eq!(calc("10 - 4 - 3"), "3");
        assert_eq!(calc("2 * -3"), "-6");
        assert_eq!(calc("100 / 10 / 5"), "2");
    }

    #[test]
    fn integers_stay_exact_and_decimals_are_floats() {
        assert_eq!(calc("7 / 2"), "3.5");
        assert_eq!(calc("8 / 2"), "4");
        assert_eq!(calc("1.5 * 2"), "3.0");
        assert_eq!(calc("0.1 + 0.2"), "0.30000000000000004");
        assert_eq!(calc("2 ^ 100"), "1267650600228229401496703205376");
        assert_eq!(calc("2 ^ -1"), "0.5");
        assert_eq!(calc("2 ^ 200"), "1.6069380442589903e60");
        assert_eq!(calc(".5 + 1"), "1.5");
    }

    #[test]
    fn modulo_follows_python() {
        assert_eq!(calc("7 % 3"), "1");
        assert_eq!(calc("-7 % 3"), "2");
        assert_eq!(calc("7 % -3"), "-2");
        assert_eq!(calc("7.5 % 2"), "1.5");
    }

    #[test]
    fn errors() {
        assert_eq!(calc("1 / 0"), "ERR division by zero");
        assert_eq!(calc("1 % 0.0"), "ERR division by zero");
        assert_eq!(
            calc("1 +"),
            "ERR syntax error at column 4: unexpected end of expression"
        );
        assert_eq!(calc("(1"), "ERR syntax error at column 3: expected ')'");
        assert_eq!(calc("1 2"), "ERR syntax error at column 3: unexpected input");
        assert_eq!(
            calc("x"),
            "ERR syntax error at column 1: expected a number or '('"
        );
        assert_eq!(
            calc("1.2.3"),
            "ERR syntax error at column 1: '1.2.3' is not a number"
        );
        assert_eq!(calc("10.0 ^ 400"), "ERR overflow");
        assert_eq!(calc("(0-8) ^ 0.5"), "ERR no real result");
        assert_eq!(
            calc(&"(".repeat(10_000)),
            format!("ERR too deeply nested (at most {MAX_DEPTH} levels)")
        );
        assert_eq!(
            calc(&"-".repeat(10_000)),
            format!("ERR too deeply nested (at most {MAX_DEPTH} levels)")
        );
    }

    #[test]
    fn one_answer_per_line_and_the_connection_stays_usable() {
        let mut h = Harness::of(ServiceKind::Calc);
        assert_eq!(h.session.pending_output(), b"");
        assert_eq!(h.send(b"1 + 1\n1 / 0\n"), "2\nERR division by zero\n");
        assert_eq!(
            h.send(b"\xff\n\n(2+3)*4\r\n"),
            "ERR invalid UTF-8\nERR empty expression\n20\n"
        );
        assert!(!h.session.is_finished());
        assert_eq!(ServiceKind::Calc.default_framing(), Framing::Line);
    }
}
