//! `calc`: evaluates one arithmetic expression per line (seed 004's calc
//! server): `+ - * / % ^`, parentheses, unary minus, integers and decimals.
//!
//! Integers are exact at any size, as the seed's Python server's are:
//! `2 ^ 100` is `1267650600228229401496703205376`; `7 / 2` is `3.5` but
//! `8 / 2` is `4`. Anything with a decimal point is a float, printed as
//! Python's `repr` prints one (`3.0`, `1.1805916207174113e+21`, `1e-05`).
//! `%` follows Python: the result has the sign of the divisor. Errors are
//! `ERR <reason>` and the connection stays usable.
//!
//! Every request stays cheap: the line is capped by `--max-line`, nesting
//! by [`MAX_DEPTH`], and every integer (written or computed) by
//! [`MAX_BITS`], about Python's own 4300-digit limit for printing one, so
//! `9 ^ 9 ^ 9` is refused before anything is multiplied.
//!
//! A recursive-descent parser by hand: the grammar is a dozen lines, and a
//! parser crate would hide the lesson's size. Nesting is capped so that a
//! peer's `((((...` cannot overflow the serving thread's stack.

use std::fmt;

use num_bigint::{BigInt, Sign};

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

/// The largest integer, in bits, written or computed: 4300 decimal digits
/// (Python's `sys.int_info.default_max_str_digits`) need 14,284.
pub const MAX_BITS: u64 = 14_284;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(BigInt),
    Float(f64),
}

impl Value {
    /// As Python's `float(int)`: correctly rounded (Rust's parser rounds
    /// the exact decimal to nearest), infinite when too large.
    fn float(&self) -> f64 {
        match self {
            Value::Int(i) => i.to_string().parse().unwrap_or(f64::INFINITY),
            Value::Float(f) => *f,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&python_repr(*x)),
        }
    }
}

/// A finite float as Python's `repr` writes it: the shortest digits that
/// read back the same (Rust finds those too), in fixed notation when the
/// decimal exponent is in -4..16 (`0.0001`, `1000000000000000.0`), else in
/// scientific notation with a signed two-digit exponent (`1e-05`, `1e+16`).
pub fn python_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits: `-1.2345e-7`.
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-4..16).contains(&exponent) {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.abs());
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exponent + 1; // Digits before the decimal point.
    if point <= 0 {
        return format!("{sign}0.{}{digits}", "0".repeat(point.unsigned_abs() as usize));
    }
    let point = point as usize;
    if digits.len() <= point {
        format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
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
    #[error("integer too large (at most 4300 digits)")]
    TooLarge,
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
            Some(b'-') => apply(b'-', Value::Int(BigInt::ZERO), self.nested(Self::unary)?),
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
            // 4300 digits is at most MAX_BITS; parsing more costs for nothing.
            if text.len() > 4300 {
                return Err(CalcError::TooLarge);
            }
            if let Ok(i) = text.parse::<BigInt>() {
                return checked(i).map(Value::Int);
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
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        if let Some(exact) = apply_int(op, x, y)? {
            return checked(exact).map(Value::Int);
        }
    }
    let (x, y) = (a.float(), b.float());
    if !x.is_finite() || !y.is_finite() {
        // An integer too large for a float (Python: OverflowError).
        return Err(CalcError::Overflow);
    }
    let result = match op {
        b'+' => x + y,
        b'-' => x - y,
        b'*' => x * y,
        b'/' if y == 0.0 => return Err(CalcError::DivisionByZero),
        b'/' => x / y,
        b'%' if y == 0.0 => return Err(CalcError::DivisionByZero),
        b'%' => x - y * (x / y).floor(),
        _ if x == 0.0 && y < 0.0 => return Err(CalcError::DivisionByZero),
        _ => x.powf(y),
    };
    if result.is_finite() {
        Ok(Value::Float(result))
    } else if result.is_nan() {
        // `(-8) ^ 0.5`: no real answer.
        Err(CalcError::NoRealResult)
    } else {
        Err(CalcError::Overflow)
    }
}

/// An integer within [`MAX_BITS`], or the refusal.
fn checked(i: BigInt) -> Result<BigInt, CalcError> {
    if i.bits() > MAX_BITS {
        Err(CalcError::TooLarge)
    } else {
        Ok(i)
    }
}

/// Exact integer arithmetic; `None` when the answer is not an integer and
/// floats must take over. Products and powers are sized before they are
/// computed, so no request makes the server multiply huge numbers.
fn apply_int(op: u8, x: &BigInt, y: &BigInt) -> Result<Option<BigInt>, CalcError> {
    let zero = BigInt::ZERO;
    Ok(Some(match op {
        b'+' => x + y,
        b'-' => x - y,
        b'*' if x.bits() + y.bits() > MAX_BITS + 1 => return Err(CalcError::TooLarge),
        b'*' => x * y,
        b'/' if *y == zero => return Err(CalcError::DivisionByZero),
        b'/' if (x % y) == zero => x / y,
        b'/' => return Ok(None),
        b'%' if *y == zero => return Err(CalcError::DivisionByZero),
        // Python's modulo: the result takes the divisor's sign.
        b'%' => {
            let r = x % y;
            if r != zero && (r.sign() == Sign::Minus) != (y.sign() == Sign::Minus) {
                r + y
            } else {
                r
            }
        }
        // A negative exponent gives a float, as in Python.
        _ if y.sign() == Sign::Minus => return Ok(None),
        _ => return int_power(x, y).map(Some),
    }))
}

/// `x ^ y` for `y >= 0`, refused when the result would pass [`MAX_BITS`].
fn int_power(x: &BigInt, y: &BigInt) -> Result<BigInt, CalcError> {
    let magnitude = x.magnitude();
    // 0, 1 and -1 stay small whatever the exponent.
    if magnitude.bits() <= 1 {
        let odd = y.bit(0);
        let even_power_of_minus_one = x.sign() == Sign::Minus && !odd;
        return Ok(if even_power_of_minus_one || *y == BigInt::ZERO {
            BigInt::from(1)
        } else {
            x.clone()
        });
    }
    // |x| >= 2, so the result has at least y + 1 bits.
    let exponent = u32::try_from(y)
        .ok()
        .filter(|e| u64::from(*e) <= MAX_BITS)
        .ok_or(CalcError::TooLarge)?;
    if (magnitude.bits() - 1) * u64::from(exponent) >= MAX_BITS {
        return Err(CalcError::TooLarge);
    }
    Ok(x.pow(exponent))
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
        assert_eq!(
            calc("2 ^ 200"),
            "1606938044258990275541962092341162602522202993782792835301376"
        );
        assert_eq!(calc("99999999999 * 99999999999"), "9999999999800000000001");
        assert_eq!(calc("2 ^ 1000").len(), 302);
        assert_eq!(calc("(0-2) ^ 3"), "-8");
        assert_eq!(calc("1 ^ 100000000000000000000"), "1");
        assert_eq!(calc("(0-1) ^ 100000000000000000001"), "-1");
        assert_eq!(calc("0 ^ 0"), "1");
        assert_eq!(calc(".5 + 1"), "1.5");
    }

    #[test]
    fn floats_print_as_python_prints_them() {
        assert_eq!(calc("2.0 ^ 70"), "1.1805916207174113e+21");
        assert_eq!(calc("10.0 ^ 300"), "1e+300");
        assert_eq!(calc("1 / 100000"), "1e-05");
        assert_eq!(calc("1 / 10000"), "0.0001");
        assert_eq!(calc("10.0 ^ 15"), "1000000000000000.0");
        assert_eq!(calc("10.0 ^ 16"), "1e+16");
        assert_eq!(calc("0.0 - 1.5"), "-1.5");
        assert_eq!(calc("0.0 * -1"), "-0.0");
        assert_eq!(calc("2 ^ 1000 / 3"), "3.5716953572875575e+300");
        assert_eq!(calc("123.456"), "123.456");
    }

    #[test]
    fn caps_keep_every_request_cheap() {
        let too_large = "ERR integer too large (at most 4300 digits)";
        assert_eq!(calc("9 ^ 9 ^ 9"), too_large);
        assert_eq!(calc("2 ^ 100000000000000000000"), too_large);
        assert_eq!(calc(&"9".repeat(4301)), too_large);
        assert_eq!(calc("2 ^ 14000 * 2 ^ 14000"), too_large);
        assert_eq!(calc("2 ^ 14283").len(), 4300);
        assert_eq!(calc("2 ^ 5000 * 1.0"), "ERR overflow");
        assert_eq!(calc("0 ^ -1"), "ERR division by zero");
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
        assert_eq!(calc("-7 % 3.5"), "0.0");
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
