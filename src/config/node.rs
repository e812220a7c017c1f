//! YAML text -> a tree of [`Node`]s, each carrying the position it was written at.
//!
//! Owns the only use of the YAML crate (`yaml-rust2`): swapping the parser means
//! rewriting [`parse`] and nothing else. Does not know the schema; `raw` decodes
//! the tree. Invariants: positions are 1-based line and column of the node's first
//! character (for block mappings and sequences, their first entry); aliases are
//! expanded to a copy of the anchored node. Tested through the loader's golden
//! fixtures (syntax errors, anchors) and `config::tests`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    /// The start of the file: where problems without a better place point.
    pub const START: Pos = Pos { line: 1, col: 1 };

    fn from_marker(mark: Marker) -> Pos {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Pos {
            line: mark.line().max(1),
            col: mark.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar's text; `plain` is false for quoted and block scalars, which are
    /// always strings (so `"~"` is not null and `"5"` is still accepted as text).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicates are kept so the decoder can report them.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// `~`, `null`, or nothing at all after a `key:`.
    pub fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } => {
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// What a user would call this node's type, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a list",
            NodeKind::Scalar { .. } if self.is_null() => "nothing (null)",
            NodeKind::Scalar { .. } => "a scalar",
        }
    }
}

/// A YAML syntax error, already positioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses the first YAML document of `text`. `Ok(None)` for an empty document.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| {
        let mut message = format!("invalid YAML: {}", e.info());
        // `host: *.example.com` reads as an alias: the likeliest mistake here.
        if e.info().contains("anchor") || e.info().contains("alias") {
            message.push_str(" (quote values that start with '*', like \"*.example.com\")");
        }
        SyntaxError {
            pos: Pos::from_marker(*e.marker()),
            message,
        }
    })?;
    if let Some(message) = builder.error {
        return Err(message);
    }
    Ok(builder.root)
}

/// Collects events into a tree. A container under construction sits on `stack`
/// until its end event; a mapping's pending key waits in its frame.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
    /// Nodes built so far, aliases counted in full: caps alias bombs.
    nodes: usize,
}

/// Far beyond any real config; reached only by alias expansion gone wild.
const MAX_NODES: usize = 200_000;

fn size(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size(k) + size(v))
                .sum::<usize>()
        }
    }
}

struct Frame {
    pos: Pos,
    anchor: usize,
    body: FrameBody,
}

enum FrameBody {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame {
                body: FrameBody::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                body: FrameBody::Map(entries, pending),
                ..
            }) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
        }
    }

    fn close(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        // yaml-rust2 marks a block mapping's start after its first key; the first
        // entry is where a reader looks for it.
        let (kind, first) = match frame.body {
            FrameBody::Seq(items) => {
                let first = items.first().map(|n| n.pos);
                (NodeKind::Seq(items), first)
            }
            FrameBody::Map(entries, _) => {
                let first = entries.first().map(|(k, _)| k.pos);
                (NodeKind::Map(entries), first)
            }
        };
        let pos = first.map_or(frame.pos, |f| f.min(frame.pos));
        self.push_node(Node { pos, kind }, frame.anchor);
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from_marker(mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.nodes += 1;
                let plain = style == TScalarStyle::Plain;
                self.push_node(
                    Node {
                        pos,
                        kind: NodeKind::Scalar { text, plain },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame {
                pos,
                anchor,
                body: FrameBody::Seq(Vec::new()),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame {
                pos,
                anchor,
                body: FrameBody::Map(Vec::new(), None),
            }),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    self.nodes = self.nodes.saturating_add(size(node));
                    if self.nodes > MAX_NODES {
                        if self.error.is_none() {
                            self.error = Some(SyntaxError {
                                pos,
                                message: "invalid YAML: aliases expand to too many nodes"
                                    .to_string(),
                            });
                        }
                        return;
                    }
                    let mut node = node.clone();
                    node.pos = pos;
                    self.push_node(node, 0);
                }
                None => {
                    if self.error.is_none() {
                        self.error = Some(SyntaxError {
                            pos,
                            message: "invalid YAML: alias to an unknown anchor".to_string(),
                        });
                    }
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}
