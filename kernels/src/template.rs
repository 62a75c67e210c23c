//! Prompt templates: how a conversation becomes the text a model continues.
//!
//! Three formats, chosen per run by name (`r1_zero`, `chatml`, `llama3`, each optionally
//! `+reasoning`):
//! - `r1_zero`: the DeepSeek-R1-Zero prompt (paper, Table 1) for RL straight from a base model, with
//!   the instruction to think inside `<think> </think>` and answer inside `<answer> </answer>`.
//! - `chatml`: Qwen's chat format (`<|im_start|>role\n…<|im_end|>\n`).
//! - `llama3`: Llama 3's chat format (`<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>`).
//!
//! `+reasoning` pre-fills `<think>\n` after the assistant header, as the DeepSeek-R1 distilled models'
//! templates do, so the model starts inside its reasoning block. The rendered prompt says whether it
//! did: the format reward must then check the completion without an opening `<think>`, and an SFT
//! target must not repeat it.
//!
//! The chat formats were checked against the `chat_template` of real `tokenizer_config.json` files
//! (Qwen3, Llama 3) rendered by `transformers`; the tests hold those strings. Two deliberate
//! differences from Qwen3's template: message content is written verbatim (Qwen3 also strips `<think>`
//! blocks from earlier assistant turns and inserts an empty one into a final assistant turn, which
//! would make training targets differ from what the model sampled), and no tool-call markup.
//!
//! The `r1_zero` text is the paper's to the letter, including `User: {prompt}. Assistant:` (a prompt
//! that ends in a full stop gets a second one). On a vocabulary that has `<think>` as a token (Qwen3),
//! the tag names in its instruction encode as those special ids, as they would in Hugging Face.
//!
//! Tokenize a rendered prompt with [`RenderedPrompt::add_special_tokens`]: chat formats write their own
//! special tokens (Llama 3's `<|begin_of_text|>` included) and must not get a second BOS; the
//! `r1_zero` prompt is plain text and gets whatever the tokenizer adds to plain text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;

/// The instruction that opens every R1-Zero prompt, verbatim from the DeepSeek-R1 paper.
pub const R1_ZERO_PREAMBLE: &str = "A conversation between User and Assistant. The user asks a \
question, and the Assistant solves it. The assistant first thinks about the reasoning process in the \
mind and then provides the user with the answer. The reasoning process and answer are enclosed \
within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process \
here </think> <answer> answer here </answer>.";

/// What can go wrong when choosing or rendering a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A template name that is not one of r1's.
    #[error(
        "unknown prompt template `{0}`: expected `r1_zero`, `chatml` or `llama3`, optionally \
         followed by `+reasoning` (e.g. `chatml+reasoning`)"
    )]
    Unknown(String),
    /// A conversation with no message renders to nothing a model should continue.
    #[error("cannot render an empty conversation")]
    NoMessages,
    /// A message the template cannot place.
    #[error("template `{template}`, message {index}: {message}")]
    Message {
        /// The template's name.
        template: PromptTemplate,
        /// The message's position in the conversation (0-based).
        index: usize,
        /// Why it does not fit.
        message: String,
    },
    /// The tokenizer does not have, as one token, a special token the template writes: the model
    /// would see it spelled out in pieces.
    #[error("template `{template}` needs `{token}` as a single token, but the tokenizer lacks it")]
    MissingToken {
        /// The template's name.
        template: PromptTemplate,
        /// The special token.
        token: &'static str,
    },
}

/// The conversation formats r1 can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TemplateKind {
    /// The DeepSeek-R1-Zero prompt for base models.
    #[default]
    #[serde(rename = "r1_zero")]
    R1Zero,
    /// Qwen's ChatML.
    #[serde(rename = "chatml")]
    ChatMl,
    /// Llama 3's header format.
    #[serde(rename = "llama3")]
    Llama3,
}

impl TemplateKind {
    /// Every kind, for error messages and tests.
    pub const ALL: [TemplateKind; 3] = [
        TemplateKind::R1Zero,
        TemplateKind::ChatMl,
        TemplateKind::Llama3,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TemplateKind::R1Zero => "r1_zero",
            TemplateKind::ChatMl => "chatml",
            TemplateKind::Llama3 => "llama3",
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TemplateKind {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, TemplateError> {
        TemplateKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| TemplateError::Unknown(s.to_string()))
    }
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person asking (or the dataset's prompt).
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name as chat formats write it.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation; the JSON shape (`{"role": "user", "content": "…"}`) is the one chat
/// datasets use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said, written into the prompt as is (Llama 3 trims surrounding whitespace).
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// A rendered prompt and what the rest of the pipeline must know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    /// The text to tokenize.
    pub text: String,
    /// Whether the text ends with a pre-filled `<think>\n`: the completion then starts inside the
    /// reasoning block, and the format reward must not expect an opening `<think>` in it.
    pub prefilled_think: bool,
    /// The `add_special_tokens` to pass to `Tokenizer::encode` for this text: false for chat formats,
    /// which already contain their special tokens, true for plain-text prompts.
    pub add_special_tokens: bool,
}

impl RenderedPrompt {
    /// Tokenizes the prompt the way the template means it to be.
    pub fn encode(&self, tokenizer: &Tokenizer) -> crate::tokenizer::Result<Vec<u32>> {
        tokenizer.encode(&self.text, self.add_special_tokens)
    }
}

/// A prompt template: a format plus whether to pre-fill `<think>\n`. Written in configs as one string,
/// `"chatml"` or `"chatml+reasoning"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptTemplate {
    /// The conversation format.
    pub kind: TemplateKind,
    /// Pre-fill `<think>\n` after the assistant header of the generation prompt.
    pub reasoning: bool,
}

/// The suffix that turns on the reasoning pre-fill in a template name.
const REASONING_SUFFIX: &str = "+reasoning";

/// Llama 3's header tokens, which appear in every turn.
const LLAMA3_BOS: &str = "<|begin_of_text|>";
const LLAMA3_HEADER_START: &str = "<|start_header_id|>";
const LLAMA3_HEADER_END: &str = "<|end_header_id|>";
const LLAMA3_EOT: &str = "<|eot_id|>";
const CHATML_START: &str = "<|im_start|>";
const CHATML_END: &str = "<|im_end|>";
const THINK_PREFILL: &str = "<think>\n";

impl PromptTemplate {
    /// A template without the reasoning pre-fill.
    pub fn new(kind: TemplateKind) -> Self {
        PromptTemplate {
            kind,
            reasoning: false,
        }
    }

    /// The same format with the `<think>\n` pre-fill.
    pub fn with_reasoning(self) -> Self {
        PromptTemplate {
            reasoning: true,
            ..self
        }
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the assistant header (and
    /// `<think>\n` for reasoning templates) so the model's continuation is the assistant's reply.
    /// Errors: an empty conversation; for `r1_zero`, a system message anywhere but first (there it
    /// replaces the preamble).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<RenderedPrompt, TemplateError> {
        if messages.is_empty() {
            return Err(TemplateError::NoMessages);
        }
        if self.kind == TemplateKind::R1Zero {
            if let Some(index) = messages.iter().skip(1).position(|m| m.role == Role::System) {
                return Err(TemplateError::Message {
                    template: *self,
                    index: index + 1,
                    message: "r1_zero takes a system message only first, where it replaces the \
                              preamble"
                        .into(),
                });
            }
        }
        Ok(self.write(messages, add_generation_prompt))
    }

    /// The common case of a dataset prompt: one user message, ready for generation.
    pub fn render_prompt(&self, prompt: &str) -> RenderedPrompt {
        self.write(&[Message::user(prompt)], true)
    }

    /// Renders a conversation that `render` has validated (or that is valid by construction).
    fn write(&self, messages: &[Message], add_generation_prompt: bool) -> RenderedPrompt {
        let mut text = String::new();
        match self.kind {
            TemplateKind::R1Zero => {
                let rest = match messages.split_first() {
                    Some((first, rest)) if first.role == Role::System => {
                        text.push_str(&first.content);
                        rest
                    }
                    _ => {
                        text.push_str(R1_ZERO_PREAMBLE);
                        messages
                    }
                };
                for m in rest {
                    // `render` rejected later system messages; write one as a user turn if it
                    // ever got here rather than drop it.
                    let (label, end) = match m.role {
                        Role::Assistant => (" Assistant: ", ""),
                        Role::User | Role::System => (" User: ", "."),
                    };
                    text.push_str(label);
                    text.push_str(&m.content);
                    text.push_str(end);
                }
                if add_generation_prompt {
                    text.push_str(" Assistant:");
                    if self.reasoning {
                        text.push(' ');
                    }
                }
            }
            TemplateKind::ChatMl => {
                for m in messages {
                    text.push_str(CHATML_START);
                    text.push_str(m.role.name());
                    text.push('\n');
                    text.push_str(&m.content);
                    text.push_str(CHATML_END);
                    text.push('\n');
                }
                if add_generation_prompt {
                    text.push_str(CHATML_START);
                    text.push_str("assistant\n");
                }
            }
            TemplateKind::Llama3 => {
                text.push_str(LLAMA3_BOS);
                for m in messages {
                    push_llama3_header(&mut text, m.role);
                    text.push_str(m.content.trim());
                    text.push_str(LLAMA3_EOT);
                }
                if add_generation_prompt {
                    push_llama3_header(&mut text, Role::Assistant);
                }
            }
        }
        let prefilled_think = add_generation_prompt && self.reasoning;
        if prefilled_think {
            text.push_str(THINK_PREFILL);
        }
        RenderedPrompt {
            text,
            prefilled_think,
            add_special_tokens: self.kind == TemplateKind::R1Zero,
        }
    }

    /// The special token that ends an assistant turn in this format, which the sampler must treat as
    /// an end of sequence even where the model's config names another eos (Llama 3 base names
    /// `<|end_of_text|>`, its chat turns end in `<|eot_id|>`). `r1_zero` has none: the model ends
    /// with its eos.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self.kind {
            TemplateKind::R1Zero => None,
            TemplateKind::ChatMl => Some(CHATML_END),
            TemplateKind::Llama3 => Some(LLAMA3_EOT),
        }
    }

    /// The special tokens the format writes, each of which must be one token of the model's
    /// vocabulary.
    pub fn special_tokens(&self) -> &'static [&'static str] {
        match self.kind {
            TemplateKind::R1Zero => &[],
            TemplateKind::ChatMl => &[CHATML_START, CHATML_END],
            TemplateKind::Llama3 => &[
                LLAMA3_BOS,
                LLAMA3_HEADER_START,
                LLAMA3_HEADER_END,
                LLAMA3_EOT,
            ],
        }
    }

    /// Checks, before a run starts, that `tokenizer` encodes each of the format's special tokens as
    /// one id (ChatML on a Llama 3 tokenizer would silently spell `<|im_start|>` out in pieces).
    pub fn check_tokenizer(&self, tokenizer: &Tokenizer) -> Result<(), TemplateError> {
        for &token in self.special_tokens() {
            let single = tokenizer.token_id(token).is_some_and(|id| {
                tokenizer
                    .encode(token, false)
                    .is_ok_and(|ids| ids.as_slice() == [id])
            });
            if !single {
                return Err(TemplateError::MissingToken {
                    template: *self,
                    token,
                });
            }
        }
        Ok(())
    }
}

fn push_llama3_header(text: &mut String, role: Role) {
    text.push_str(LLAMA3_HEADER_START);
    text.push_str(role.name());
    text.push_str(LLAMA3_HEADER_END);
    text.push_str("\n\n");
}

impl fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        if self.reasoning {
            f.write_str(REASONING_SUFFIX)?;
        }
        Ok(())
    }
}

impl FromStr for PromptTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, TemplateError> {
        let (kind, reasoning) = match s.strip_suffix(REASONING_SUFFIX) {
            Some(kind) => (kind, true),
            None => (s, false),
        };
        let kind = kind
            .parse::<TemplateKind>()
            .map_err(|_| TemplateError::Unknown(s.to_string()))?;
        Ok(PromptTemplate { kind, reasoning })
    }
}

impl TryFrom<String> for PromptTemplate {
    type Error = TemplateError;

    fn try_from(s: String) -> Result<Self, TemplateError> {
        s.parse()
    }
}

impl From<PromptTemplate> for String {
    fn from(t: PromptTemplate) -> String {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(name: &str) -> PromptTemplate {
        name.parse().unwrap()
    }

    /// The conversations whose expected renderings below came from `transformers`'
    /// `apply_chat_template(..., add_generation_prompt=True)` on the Qwen3 and Llama 3
    /// tokenizer_config.json fixtures.
    fn conversations() -> Vec<(&'static str, Vec<Message>)> {
        vec![
            ("user", vec![Message::user("What is 2+2?")]),
            (
                "system_user",
                vec![
                    Message::system("You are a careful mathematician."),
                    Message::user("Solve x^2 = 4."),
                ],
            ),
            (
                "multi",
                vec![
                    Message::system("Be brief."),
                    Message::user("Hi"),
                    Message::assistant("Hello! How can I help?"),
                    Message::user("Ünïcödé 🤖 17 * 24?"),
                ],
            ),
            ("spaces", vec![Message::user("  padded question \n")]),
        ]
    }

    const CHATML_EXPECTED: [&str; 4] = [
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are a careful mathematician.<|im_end|>\n<|im_start|>user\nSolve x^2 = 4.<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nÜnïcödé 🤖 17 * 24?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n  padded question \n<|im_end|>\n<|im_start|>assistant\n",
    ];

    const LLAMA3_EXPECTED: [&str; 4] = [
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a careful mathematician.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nSolve x^2 = 4.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nÜnïcödé 🤖 17 * 24?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ];

    #[test]
    fn chat_formats_match_the_reference_chat_templates() {
        for (kind, expected) in [("chatml", CHATML_EXPECTED), ("llama3", LLAMA3_EXPECTED)] {
            for ((name, messages), expected) in conversations().iter().zip(expected) {
                let rendered = template(kind).render(messages, true).unwrap();
                assert_eq!(rendered.text, expected, "{kind} {name}");
                assert!(!rendered.prefilled_think);
                assert!(!rendered.add_special_tokens);
            }
        }
    }

    #[test]
    fn chatml_without_generation_prompt_matches_qwen3() {
        let (_, messages) = &conversations()[2];
        let rendered = template("chatml").render(messages, false).unwrap();
        assert_eq!(
            rendered.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nÜnïcödé 🤖 17 * 24?<|im_end|>\n"
        );
    }

    #[test]
    fn r1_zero_is_the_paper_prompt_verbatim() {
        let rendered = template("r1_zero").render_prompt("What is 17 * 24?");
        assert_eq!(
            rendered.text,
            "A conversation between User and Assistant. The user asks a question, and the Assistant \
             solves it. The assistant first thinks about the reasoning process in the mind and then \
             provides the user with the answer. The reasoning process and answer are enclosed within \
             <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning \
             process here </think> <answer> answer here </answer>. User: What is 17 * 24?. Assistant:"
        );
        assert!(!rendered.prefilled_think);
        assert!(
            rendered.add_special_tokens,
            "plain text gets the tokenizer's BOS"
        );
        assert_eq!(
            template("r1_zero")
                .render(&[Message::user("What is 17 * 24?")], true)
                .unwrap(),
            rendered
        );
    }

    #[test]
    fn r1_zero_conversations() {
        let t = template("r1_zero");
        let rendered = t
            .render(
                &[
                    Message::system("Answer in <answer> tags."),
                    Message::user("1+1"),
                    Message::assistant("<think>easy</think> <answer>2</answer>"),
                    Message::user("2+2"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            rendered.text,
            "Answer in <answer> tags. User: 1+1. Assistant: <think>easy</think> <answer>2</answer> \
             User: 2+2. Assistant:"
        );
        // Without the generation prompt, an SFT sample ends with the assistant's reply.
        let rendered = t
            .render(
                &[
                    Message::user("1+1"),
                    Message::assistant("<answer>2</answer>"),
                ],
                false,
            )
            .unwrap();
        assert!(rendered
            .text
            .ends_with(". User: 1+1. Assistant: <answer>2</answer>"));
        let err = t
            .render(&[Message::user("1+1"), Message::system("late")], true)
            .unwrap_err();
        assert!(
            matches!(err, TemplateError::Message { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("r1_zero"), "{err}");
    }

    #[test]
    fn reasoning_prefills_think_after_the_assistant_header() {
        // (template, what the pre-fill appends to the plain generation prompt, how the text ends)
        let cases = [
            ("r1_zero+reasoning", " <think>\n", ". Assistant: <think>\n"),
            (
                "chatml+reasoning",
                "<think>\n",
                "<|im_start|>assistant\n<think>\n",
            ),
            (
                "llama3+reasoning",
                "<think>\n",
                "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n",
            ),
        ];
        for (name, prefill, ending) in cases {
            let t = template(name);
            let rendered = t.render_prompt("q");
            assert!(
                rendered.text.ends_with(ending),
                "{name}: {:?}",
                rendered.text
            );
            assert!(rendered.prefilled_think, "{name}");
            let plain = PromptTemplate::new(t.kind).render_prompt("q");
            assert_eq!(rendered.text, format!("{}{prefill}", plain.text), "{name}");
            assert_eq!(rendered.add_special_tokens, plain.add_special_tokens);
            // No generation prompt, no pre-fill.
            let rendered = t.render(&[Message::user("q")], false).unwrap();
            assert!(!rendered.prefilled_think, "{name}");
            assert!(!rendered.text.contains(THINK_PREFILL), "{name}");
        }
    }

    #[test]
    fn empty_conversations_are_rejected() {
        for kind in TemplateKind::ALL {
            assert_eq!(
                PromptTemplate::new(kind).render(&[], true),
                Err(TemplateError::NoMessages)
            );
        }
    }

    #[test]
    fn names_parse_print_and_serialize() {
        for kind in TemplateKind::ALL {
            for reasoning in [false, true] {
                let t = PromptTemplate { kind, reasoning };
                let name = t.to_string();
                assert_eq!(name.parse::<PromptTemplate>(), Ok(t));
                let json = serde_json::to_string(&t).unwrap();
                assert_eq!(json, format!("\"{name}\""));
                assert_eq!(serde_json::from_str::<PromptTemplate>(&json).unwrap(), t);
            }
        }
        assert_eq!(template("chatml+reasoning").kind, TemplateKind::ChatMl);
        for bad in [
            "",
            "ChatML",
            "chatml+",
            "+reasoning",
            "qwen",
            "chatml+reasoning+reasoning",
        ] {
            let err = bad.parse::<PromptTemplate>().unwrap_err();
            assert_eq!(err, TemplateError::Unknown(bad.to_string()));
            assert!(err.to_string().contains("`chatml`"), "{err}");
        }
        let err = serde_json::from_str::<PromptTemplate>("\"llama2\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown prompt template `llama2`"),
            "{err}"
        );
        let message: Message =
            serde_json::from_str(r#"{"role": "assistant", "content": "hi"}"#).unwrap();
        assert_eq!(message, Message::assistant("hi"));
        assert!(serde_json::from_str::<Message>(r#"{"role": "tool", "content": ""}"#).is_err());
        assert_eq!(PromptTemplate::default(), template("r1_zero"));
    }

    #[test]
    fn byte_tokenizer_has_the_chatml_tokens_but_not_llama3s() {
        let byte = Tokenizer::byte();
        assert_eq!(template("chatml").check_tokenizer(&byte), Ok(()));
        assert_eq!(template("r1_zero").check_tokenizer(&byte), Ok(()));
        assert_eq!(
            template("llama3").check_tokenizer(&byte),
            Err(TemplateError::MissingToken {
                template: template("llama3"),
                token: "<|begin_of_text|>"
            })
        );
        let rendered = template("chatml+reasoning").render_prompt("2+2?");
        let ids = rendered.encode(&byte).unwrap();
        use crate::tokenizer::ByteTokenizer as B;
        assert_eq!(ids[0], B::IM_START);
        assert_eq!(ids.iter().filter(|&&id| id == B::IM_END).count(), 1);
        assert_eq!(ids[ids.len() - 2..], [B::THINK, u32::from(b'\n')]);
        assert_eq!(byte.decode(&ids, false).unwrap(), rendered.text);
    }
}
