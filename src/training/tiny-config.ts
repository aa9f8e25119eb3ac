// A tiny DeepSeek-V3 config.json for training tests: MLA with q_lora, one dense layer then MoE layers
// (sigmoid router with correction bias, group-limited top-2 of 8, a shared expert) and one MTP module.
export const TINY_TRAIN_CONFIG = {
  model_type: 'deepseek_v3', vocab_size: 40, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16,
  num_hidden_layers: 3, num_attention_heads: 2, num_key_value_heads: 2, q_lora_rank: 16, kv_lora_rank: 16,
  qk_nope_head_dim: 8, qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 8, n_shared_experts: 1, num_experts_per_tok: 2,
  n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, scoring_func: 'sigmoid', topk_method: 'noaux_tc', norm_topk_prob: true,
  first_k_dense_replace: 1, moe_layer_freq: 1, rope_theta: 10000, max_position_embeddings: 64, rms_norm_eps: 1e-6, rope_scaling: null,
  num_nextn_predict_layers: 1, tie_word_embeddings: false,
};
