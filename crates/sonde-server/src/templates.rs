//! Custom webhook payloads: the part of Go's `text/template` that Honeycomb's webhook templates
//! use. An action `{{ … }}` is a pipeline — a value (`.Name`, `.Result.GroupsTriggered`,
//! `.Vars.severity`, or a quoted string) followed by `| toJson` or `| quote` — or a function
//! applied to a value (`toJson .Result.Groups`, `quote .Name`). `{{-` and `-}}` trim the
//! whitespace beside them, as in Go. Control actions (`if`, `range`, `with`, …) are refused when
//! the recipient is saved, with their name, rather than rendered wrongly.

use serde_json::Value;

/// A template error: what and where (a byte offset in the template).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TemplateError {
    pub(crate) message: String,
    pub(crate) position: usize,
}

enum Part {
    Text(String),
    Action { position: usize, words: Vec<String> },
}

fn err(message: impl Into<String>, position: usize) -> TemplateError {
    TemplateError {
        message: message.into(),
        position,
    }
}

/// Splits an action's text into words: dotted paths, names, `|`, and quoted strings (kept
/// with their quotes).
fn words(action: &str, position: usize) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut chars = action.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '|' {
            out.push("|".to_string());
            continue;
        }
        if c == '"' {
            let mut s = String::from('"');
            let mut closed = false;
            while let Some((_, d)) = chars.next() {
                s.push(d);
                if d == '\\' {
                    if let Some((_, e)) = chars.next() {
                        s.push(e);
                    }
                } else if d == '"' {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(err("a string is not closed", position + i));
            }
            out.push(s);
            continue;
        }
        let mut w = String::from(c);
        while let Some((_, d)) = chars.peek() {
            if d.is_whitespace() || *d == '|' {
                break;
            }
            w.push(*d);
            chars.next();
        }
        out.push(w);
    }
    Ok(out)
}

fn parse(template: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_string();
        let mut body_start = open + 2;
        if rest[body_start..].starts_with('-') {
            text = text.trim_end().to_string();
            body_start += 1;
        }
        let close = rest[body_start..]
            .find("}}")
            .ok_or_else(|| err("an action {{ is not closed by }}", offset + open))?
            + body_start;
        let mut body = &rest[body_start..close];
        let trim_after = body.ends_with('-');
        if trim_after {
            body = &body[..body.len() - 1];
        }
        parts.push(Part::Text(text));
        let position = offset + open;
        let ws = words(body, position)?;
        if let Some(first) = ws.first()
            && matches!(
                first.as_str(),
                "if" | "else" | "end" | "range" | "with" | "define" | "template" | "block" | "break" | "continue"
            )
        {
            return Err(err(
                format!("{{{{ {first} }}}} is not supported in webhook templates: only values, toJson and quote"),
                position,
            ));
        }
        parts.push(Part::Action { position, words: ws });
        let mut next = close + 2;
        if trim_after {
            next += rest[next..].len() - rest[next..].trim_start().len();
        }
        offset += next;
        rest = &rest[next..];
    }
    parts.push(Part::Text(rest.to_string()));
    // Check every action now, against no data: a typo in a function fails the save.
    for p in &parts {
        if let Part::Action { position, words } = p {
            eval(words, *position, &Value::Null)?;
        }
    }
    Ok(parts)
}

/// Checks a template's syntax.
pub(crate) fn check(template: &str) -> Result<(), TemplateError> {
    parse(template).map(|_| ())
}

fn lookup<'a>(data: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|s| !s.is_empty())
        .fold(data, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn value_of(word: &str, position: usize, data: &Value) -> Result<Value, TemplateError> {
    if word.starts_with('"') {
        return serde_json::from_str(word).map_err(|e| err(format!("a string: {e}"), position));
    }
    if let Some(path) = word.strip_prefix('.') {
        return Ok(lookup(data, path).clone());
    }
    Err(err(
        format!("{word:?} is not a value (a .Field or a \"string\")"),
        position,
    ))
}

fn apply(func: &str, v: Value, position: usize) -> Result<Value, TemplateError> {
    match func {
        "toJson" => Ok(Value::String(v.to_string())),
        "quote" => {
            let s = match &v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            Ok(Value::String(Value::String(s).to_string()))
        }
        other => Err(err(format!("unknown function {other:?} (toJson or quote)"), position)),
    }
}

fn eval(words: &[String], position: usize, data: &Value) -> Result<Value, TemplateError> {
    let mut stages = words.split(|w| w == "|");
    let first = stages.next().unwrap_or_default();
    let mut v = match first {
        [] => return Err(err("an empty action", position)),
        [value] => value_of(value, position, data)?,
        [func, value] => apply(func, value_of(value, position, data)?, position)?,
        _ => return Err(err("an action is a value, then | toJson or | quote", position)),
    };
    for stage in stages {
        match stage {
            [func] => v = apply(func, v, position)?,
            _ => return Err(err("after | comes toJson or quote", position)),
        }
    }
    Ok(v)
}

/// Renders `template` over `data` (values print as Go prints them: strings bare, others as JSON).
pub(crate) fn render(template: &str, data: &Value) -> Result<String, TemplateError> {
    let mut out = String::new();
    for p in parse(template)? {
        match p {
            Part::Text(t) => out.push_str(&t),
            Part::Action { position, words } => match eval(&words, position, data)? {
                Value::String(s) => out.push_str(&s),
                Value::Null => out.push_str("<no value>"),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_pipes_and_functions_render_as_go_would() {
        let data = json!({"Name": "CPU \"high\"", "Threshold": 2.5, "Vars": {"severity": "warn"},
                          "Result": {"GroupsTriggered": [{"Group": [{"Key": "svc", "Value": "pay"}], "Result": 7}]}});
        let t = r#"{"text": {{ .Name | quote }}, "sev": "{{ .Vars.severity }}", "t": {{ .Threshold }},
 "groups": {{ toJson .Result.GroupsTriggered }}, "missing": "{{ .Nope }}"}"#;
        let out = render(t, &data).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "CPU \"high\"");
        assert_eq!(v["sev"], "warn");
        assert_eq!(v["t"], 2.5);
        assert_eq!(v["groups"], data["Result"]["GroupsTriggered"]);
        assert_eq!(v["missing"], "<no value>");
        assert_eq!(render("a  {{- .Name -}}  b", &json!({"Name": "x"})).unwrap(), "axb");
    }

    #[test]
    fn mistakes_are_refused_with_their_position() {
        let e = check("{\"a\": {{ range .X }}").unwrap_err();
        assert!(e.message.contains("range"), "{e:?}");
        assert_eq!(e.position, 6);
        assert!(check("{{ .A | upper }}").unwrap_err().message.contains("upper"));
        assert!(check("x {{ .A ").unwrap_err().message.contains("not closed"));
        assert!(check("{{ \"open }}").unwrap_err().message.contains("not closed"));
    }
}
