//! Text → [`Ast`]: Honeycomb's grammar (`HCDC.g4`) by recursive descent.
//!
//! Infix operators bind, tightest first: `!`, `* / %`, `-`, `+`, `< <= > >=`, `= !=`, `AND`,
//! `OR`; each level is left-associative, and each operator is the function of the same meaning
//! (`a - b` is `SUB(a, b)`), so the rest of the pipeline only ever sees calls. A `-` directly
//! before a digit is a negative literal only where an operand is expected (`SUB(1,-2)`,
//! `$a - -2`), so `$a -2` still subtracts.

use super::{ExprError, Func, MAX_DEPTH, MAX_EXPRESSION_CHARS};

/// A parsed expression node and the character offset it starts at.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    /// 0-based character offset of the node's first character.
    pub pos: usize,
    /// What the node is.
    pub node: AstNode,
}

/// The kinds of node.
#[derive(Debug, Clone, PartialEq)]
pub enum AstNode {
    /// `$name`, `$"quoted name"` or ``$`raw name` ``.
    Column(String),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A function call (infix operators included).
    Call(Func, Vec<Ast>),
}

impl Ast {
    /// Whether the expression refers to the column `name` anywhere.
    pub fn names_column(&self, name: &str) -> bool {
        match &self.node {
            AstNode::Column(c) => c == name,
            AstNode::Call(_, args) => args.iter().any(|a| a.names_column(name)),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Column(String),
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    LParen,
    RParen,
    Comma,
    Op(&'static str),
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Ast, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_EXPRESSION_CHARS {
        return Err(ExprError::at(
            MAX_EXPRESSION_CHARS,
            format!("expression longer than {MAX_EXPRESSION_CHARS} characters"),
        ));
    }
    let toks = lex(&chars)?;
    if toks.is_empty() {
        return Err(ExprError::at(0, "empty expression"));
    }
    let mut p = Parser {
        toks,
        at: 0,
        end: chars.len(),
        depth: 0,
    };
    let ast = p.or()?;
    if let Some((pos, t)) = p.toks.get(p.at) {
        return Err(ExprError::at(
            *pos,
            format!("unexpected {} after the expression", describe(t)),
        ));
    }
    Ok(ast)
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || "_./:=+?-".contains(c)
}

fn lex(s: &[char]) -> Result<Vec<(usize, Tok)>, ExprError> {
    let mut out: Vec<(usize, Tok)> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let start = i;
        // Where an operand is expected, `-1` is a literal; after one, `-` subtracts.
        let operand_expected = match out.last() {
            None | Some((_, Tok::LParen | Tok::Comma | Tok::Op(_))) => true,
            Some((_, Tok::Ident(w))) => is_keyword_op(w),
            _ => false,
        };
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '$' => {
                i += 1;
                match s.get(i) {
                    Some('"') => {
                        let (name, next) = string(s, i)?;
                        i = next;
                        Tok::Column(name)
                    }
                    Some('`') => {
                        let (name, next) = raw(s, i)?;
                        i = next;
                        Tok::Column(name)
                    }
                    _ => {
                        while i < s.len() && is_name_char(s[i]) {
                            i += 1;
                        }
                        if i == start + 1 {
                            return Err(ExprError::at(start, "a column name must follow $"));
                        }
                        Tok::Column(s[start + 1..i].iter().collect())
                    }
                }
            }
            '"' => {
                let (v, next) = string(s, i)?;
                i = next;
                Tok::Str(v)
            }
            '`' => {
                let (v, next) = raw(s, i)?;
                i = next;
                Tok::Str(v)
            }
            '(' | ')' | ',' => {
                i += 1;
                match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Comma,
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && s.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
                || (c == '-' && operand_expected && s.get(i + 1).is_some_and(|d| d.is_ascii_digit() || *d == '.')) =>
            {
                let (t, next) = number(s, i)?;
                i = next;
                t
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                    i += 1;
                }
                Tok::Ident(s[start..i].iter().collect())
            }
            _ => {
                let two: String = s[i..(i + 2).min(s.len())].iter().collect();
                let op = ["<=", ">=", "!="].into_iter().find(|o| *o == two).or_else(|| {
                    ["!", "*", "/", "%", "+", "-", "<", ">", "="]
                        .into_iter()
                        .find(|o| o.starts_with(c))
                });
                match op {
                    Some(op) => {
                        i += op.len();
                        Tok::Op(op)
                    }
                    None => return Err(ExprError::at(start, format!("unexpected character {c:?}"))),
                }
            }
        };
        out.push((start, tok));
    }
    Ok(out)
}

fn is_keyword_op(w: &str) -> bool {
    w.eq_ignore_ascii_case("AND") || w.eq_ignore_ascii_case("OR")
}

fn number(s: &[char], mut i: usize) -> Result<(Tok, usize), ExprError> {
    let start = i;
    if s[i] == '-' {
        i += 1;
    }
    let mut float = false;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    if i < s.len() && s[i] == '.' {
        float = true;
        i += 1;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < s.len() && (s[i] == 'e' || s[i] == 'E') {
        let mut j = i + 1;
        if j < s.len() && (s[j] == '+' || s[j] == '-') {
            j += 1;
        }
        if j < s.len() && s[j].is_ascii_digit() {
            float = true;
            i = j;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    let text: String = s[start..i].iter().collect();
    let tok = if float {
        Tok::Float(
            text.parse()
                .map_err(|_| ExprError::at(start, format!("invalid number {text}")))?,
        )
    } else {
        Tok::Int(
            text.parse()
                .map_err(|_| ExprError::at(start, format!("integer {text} is out of range (write it as a float)")))?,
        )
    };
    Ok((tok, i))
}

/// A `` `raw` `` string starting at `i`: no escapes.
fn raw(s: &[char], i: usize) -> Result<(String, usize), ExprError> {
    let end = (i + 1..s.len())
        .find(|&j| s[j] == '`')
        .ok_or_else(|| ExprError::at(i, "unterminated `raw` string"))?;
    Ok((s[i + 1..end].iter().collect(), end + 1))
}

/// A `"…"` string starting at `i`, with Go's escapes.
fn string(s: &[char], i: usize) -> Result<(String, usize), ExprError> {
    let mut out = String::new();
    let mut j = i + 1;
    loop {
        let Some(&c) = s.get(j) else {
            return Err(ExprError::at(i, "unterminated string"));
        };
        match c {
            '"' => return Ok((out, j + 1)),
            '\n' => return Err(ExprError::at(j, "newline in a string (write it as \\n)")),
            '\\' => {
                let at = j;
                let e = *s.get(j + 1).ok_or_else(|| ExprError::at(at, "unterminated string"))?;
                j += 2;
                let simple = match e {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' => Some('\\'),
                    '\'' => Some('\''),
                    '"' => Some('"'),
                    _ => None,
                };
                if let Some(ch) = simple {
                    out.push(ch);
                    continue;
                }
                let (digits, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    '0'..='7' => {
                        j -= 1; // the first octal digit is part of the number
                        (3, 8)
                    }
                    _ => return Err(ExprError::at(at, format!("unknown escape \\{e}"))),
                };
                let code: String = s.get(j..j + digits).map(|d| d.iter().collect()).unwrap_or_default();
                let n = u32::from_str_radix(&code, radix)
                    .ok()
                    .filter(|_| code.len() == digits)
                    .ok_or_else(|| ExprError::at(at, format!("invalid escape \\{e}{code}")))?;
                j += digits;
                // \x and octal escapes are bytes in Go; above 0x7f a lone byte is not text.
                if matches!(e, 'x' | '0'..='7') && n > 0x7f {
                    return Err(ExprError::at(
                        at,
                        "byte escapes above \\x7f are not valid UTF-8; use \\u",
                    ));
                }
                out.push(char::from_u32(n).ok_or_else(|| ExprError::at(at, "escape is not a Unicode character"))?);
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Column(c) => format!("column ${c}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Int(i) => format!("number {i}"),
        Tok::Float(f) => format!("number {f}"),
        Tok::Ident(w) => format!("{w:?}"),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Op(o) => format!("{o:?}"),
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    /// Character length of the text (where "unexpected end" points).
    end: usize,
    depth: usize,
}

/// Binary levels, loosest first: the operators of each and the function each one means.
const LEVELS: &[&[(&str, Func)]] = &[
    &[("OR", Func::Or)],
    &[("AND", Func::And)],
    &[("=", Func::Equals), ("!=", Func::NotEquals)],
    &[("<", Func::Lt), ("<=", Func::Lte), (">", Func::Gt), (">=", Func::Gte)],
    &[("+", Func::Sum)],
    &[("-", Func::Sub)],
    &[("*", Func::Mul), ("/", Func::Div), ("%", Func::Mod)],
];

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn or(&mut self) -> Result<Ast, ExprError> {
        self.level(0)
    }

    fn level(&mut self, n: usize) -> Result<Ast, ExprError> {
        if n == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.level(n + 1)?;
        loop {
            let func = match self.peek() {
                Some(Tok::Op(o)) => LEVELS[n].iter().find(|(s, _)| s == o).map(|(_, f)| *f),
                Some(Tok::Ident(w)) => LEVELS[n]
                    .iter()
                    .find(|(s, _)| s.eq_ignore_ascii_case(w))
                    .map(|(_, f)| *f),
                _ => None,
            };
            let Some(func) = func else { return Ok(left) };
            let pos = self.pos();
            self.at += 1;
            let right = self.level(n + 1)?;
            left = Ast {
                pos,
                node: AstNode::Call(func, vec![left, right]),
            };
        }
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        if self.peek() == Some(&Tok::Op("!")) {
            let pos = self.pos();
            self.at += 1;
            let inner = self.nested(|p| p.unary())?;
            return Ok(Ast {
                pos,
                node: AstNode::Call(Func::Not, vec![inner]),
            });
        }
        self.primary()
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, ExprError>) -> Result<T, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::at(
                self.pos(),
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn primary(&mut self) -> Result<Ast, ExprError> {
        let pos = self.pos();
        let Some((_, tok)) = self.toks.get(self.at).cloned() else {
            return Err(ExprError::at(self.end, "unexpected end of the expression"));
        };
        self.at += 1;
        let node = match tok {
            Tok::Column(c) => AstNode::Column(c),
            Tok::Str(s) => AstNode::Str(s),
            Tok::Int(i) => AstNode::Int(i),
            Tok::Float(f) => AstNode::Float(f),
            Tok::LParen => {
                let inner = self.nested(|p| p.or())?;
                self.expect_rparen(pos)?;
                return Ok(inner);
            }
            Tok::Ident(w) => {
                if self.peek() == Some(&Tok::LParen) {
                    let func = Func::by_name(&w).ok_or_else(|| ExprError::at(pos, format!("unknown function {w}")))?;
                    self.at += 1;
                    let args = self.nested(|p| p.args(pos))?;
                    return Ok(Ast {
                        pos,
                        node: AstNode::Call(func, args),
                    });
                }
                match w.to_ascii_lowercase().as_str() {
                    "true" => AstNode::Bool(true),
                    "false" => AstNode::Bool(false),
                    "null" => AstNode::Null,
                    _ => {
                        return Err(ExprError::at(
                            pos,
                            format!("unexpected word {w:?}: write a column as ${w}, a string as \"{w}\""),
                        ));
                    }
                }
            }
            t => return Err(ExprError::at(pos, format!("unexpected {}", describe(&t)))),
        };
        Ok(Ast { pos, node })
    }

    /// Arguments after `NAME(`: a comma-separated list, a trailing comma allowed.
    fn args(&mut self, open: usize) -> Result<Vec<Ast>, ExprError> {
        let mut args = Vec::new();
        loop {
            if self.peek() == Some(&Tok::RParen) {
                self.at += 1;
                return Ok(args);
            }
            args.push(self.or()?);
            match self.peek() {
                Some(Tok::Comma) => self.at += 1,
                Some(Tok::RParen) => {}
                None => return Err(ExprError::at(open, "unclosed \"(\"")),
                Some(t) => {
                    let t = describe(t);
                    return Err(ExprError::at(self.pos(), format!("expected \",\" or \")\", got {t}")));
                }
            }
        }
    }

    fn expect_rparen(&mut self, open: usize) -> Result<(), ExprError> {
        match self.peek() {
            Some(Tok::RParen) => {
                self.at += 1;
                Ok(())
            }
            None => Err(ExprError::at(open, "unclosed \"(\"")),
            Some(t) => {
                let t = describe(t);
                Err(ExprError::at(self.pos(), format!("expected \")\", got {t}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: Func, args: Vec<AstNode>) -> AstNode {
        AstNode::Call(f, args.into_iter().map(|node| Ast { pos: 0, node }).collect())
    }

    /// The tree without positions, to compare shapes.
    fn shape(a: &Ast) -> AstNode {
        match &a.node {
            AstNode::Call(f, args) => call(*f, args.iter().map(shape).collect()),
            n => n.clone(),
        }
    }

    fn p(s: &str) -> AstNode {
        shape(&parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn literals_and_columns() {
        assert_eq!(p("$http.status_code"), AstNode::Column("http.status_code".into()));
        assert_eq!(p("$\"1st token\""), AstNode::Column("1st token".into()));
        assert_eq!(p("$`a b`"), AstNode::Column("a b".into()));
        assert_eq!(p(r#""a\tb\u00e9\x41\101""#), AstNode::Str("a\tbéAA".into()));
        assert_eq!(p(r"`\d+`"), AstNode::Str(r"\d+".into()));
        assert_eq!(p("-12"), AstNode::Int(-12));
        assert_eq!(p(".5"), AstNode::Float(0.5));
        assert_eq!(p("4e-2"), AstNode::Float(0.04));
        assert_eq!(p("TRUE"), AstNode::Bool(true));
        assert_eq!(p("null"), AstNode::Null);
    }

    #[test]
    fn precedence_and_operators() {
        use AstNode::*;
        // * binds tighter than -, which binds tighter than +.
        assert_eq!(
            p("1 + 2 - 3 * 4"),
            call(
                Func::Sum,
                vec![
                    Int(1),
                    call(Func::Sub, vec![Int(2), call(Func::Mul, vec![Int(3), Int(4)])])
                ]
            )
        );
        assert_eq!(p("$a -2"), call(Func::Sub, vec![Column("a".into()), Int(2)]));
        assert_eq!(p("$a - -2"), call(Func::Sub, vec![Column("a".into()), Int(-2)]));
        assert_eq!(
            p("!EXISTS($p) AND $d <= 300 or false"),
            call(
                Func::Or,
                vec![
                    call(
                        Func::And,
                        vec![
                            call(Func::Not, vec![call(Func::Exists, vec![Column("p".into())])]),
                            call(Func::Lte, vec![Column("d".into()), Int(300)])
                        ]
                    ),
                    Bool(false)
                ]
            )
        );
        assert_eq!(p("if(1, 2,)"), call(Func::If, vec![Int(1), Int(2)]));
        assert_eq!(
            p("($a = 1) != true"),
            call(
                Func::NotEquals,
                vec![call(Func::Equals, vec![Column("a".into()), Int(1)]), Bool(true)]
            )
        );
    }

    #[test]
    fn errors_point_at_the_mistake() {
        let e = parse("IF(GTE($a, 1), FOO(2))").unwrap_err();
        assert_eq!((e.message.as_str(), e.position), ("unknown function FOO", 15));
        let e = parse("SUM(1, 2").unwrap_err();
        assert_eq!(e.position, 0);
        let e = parse("\"abc").unwrap_err();
        assert_eq!(e.message, "unterminated string");
        let e = parse("1 2").unwrap_err();
        assert_eq!(e.position, 2);
        let e = parse("status").unwrap_err();
        assert!(e.message.contains("$status"), "{e}");
        let deep = "(".repeat(200) + "1" + &")".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        assert!(parse(&"x".repeat(5000)).unwrap_err().message.contains("4095"));
        // Positions count characters, not bytes.
        assert_eq!(parse("CONCAT(\"é\", FOO())").unwrap_err().position, 12);
    }
}
