//! Models as Hugging Face ships them: `config.json`, safetensors weights, and the flat parameter
//! layout the engine computes on.

pub mod config;
pub mod gguf;
pub mod layout;
pub mod limits;
pub mod sequence_classification;
pub mod tiny;
pub mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use layout::{ParamLayout, TensorSlot};
pub use sequence_classification::{load_reward_model_dir, save_reward_model_dir, RewardModel};
pub use weights::{
    check_model_dir, copy_tokenizer_files, load_model_dir, save_model_dir, Model, TOKENIZER_FILES,
};
