//! A YAML document as a tree whose every node knows its line, for the Envoy importer's
//! messages (`file:line: what cannot be carried`). Anchors and aliases are refused: the
//! importer reads plain configuration.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One node and the line it starts on (1-based).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// The node.
    pub(crate) kind: Kind,
    /// Its line.
    pub(crate) line: usize,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// A scalar: its text, and whether it was quoted (a quoted `true` is a string).
    Scalar(String, bool),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the document's order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar's text, if it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// What the node is, for messages.
    pub(crate) fn what(&self) -> &'static str {
        match self.kind {
            Kind::Scalar(..) => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// Why a document cannot be read: the line and the message.
#[derive(Debug, PartialEq)]
pub(crate) struct YamlError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

#[derive(Default)]
struct Builder {
    /// Open collections: the node being filled, and a mapping's pending key.
    stack: Vec<(Node, Option<Node>)>,
    documents: Vec<Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn push(&mut self, node: Node) {
        let Some((parent, key)) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(pairs) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
            Kind::Scalar(..) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, _, _) => self.push(Node {
                kind: Kind::Scalar(text, style != TScalarStyle::Plain),
                line,
            }),
            Event::SequenceStart(..) => self.stack.push((
                Node {
                    kind: Kind::Seq(Vec::new()),
                    line,
                },
                None,
            )),
            Event::MappingStart(..) => self.stack.push((
                Node {
                    kind: Kind::Map(Vec::new()),
                    line,
                },
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push(node);
                }
            }
            Event::Alias(_) => {
                self.error = Some(YamlError {
                    line,
                    message: "aliases (*name) are not read; write the value out".into(),
                });
            }
            _ => {}
        }
    }
}

/// Reads every document of `text`.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    let mut b = Builder::default();
    Parser::new_from_str(text)
        .load(&mut b, true)
        .map_err(|e| YamlError {
            line: e.marker().line(),
            message: e.info().to_owned(),
        })?;
    match b.error {
        Some(e) => Err(e),
        None => Ok(b.documents),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_lines() {
        let docs = parse("domain: d\ndescriptors:\n  - key: k\n    value: \"v\"\n").unwrap();
        let Kind::Map(top) = &docs[0].kind else {
            panic!()
        };
        assert_eq!(top[1].0.as_str(), Some("descriptors"));
        let Kind::Seq(items) = &top[1].1.kind else {
            panic!()
        };
        assert_eq!(items[0].line, 3);
        let Kind::Map(d) = &items[0].kind else {
            panic!()
        };
        assert_eq!(
            d[1].1,
            Node {
                kind: Kind::Scalar("v".into(), true),
                line: 4
            }
        );
        assert_eq!(parse("a: &x 1\nb: *x\n").unwrap_err().line, 2);
        assert_eq!(parse("a: [1,\n").unwrap_err().line, 2);
    }
}
