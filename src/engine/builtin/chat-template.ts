// The built-in model's chat template: DeepSeek-V3 layout (BOS + system prompts joined by blank lines,
// <｜User｜>/<｜Assistant｜> turns, <｜end▁of▁sentence｜> after each answer), V3's tool-call format
// with <｜tool▁calls▁end｜> always written (the original V3 template drops it for a single call), R1's
// stripping of earlier reasoning, and an optional `thinking` switch that opens <think> in the prompt.
export const BUILTIN_CHAT_TEMPLATE = `{{- bos_token }}
{%- set ns = namespace(system='', first=true, in_outputs=false) %}
{%- for message in messages %}
{%- if message['role'] == 'system' %}
{%- if ns.first %}{%- set ns.system = message['content'] %}{%- else %}{%- set ns.system = ns.system + '\\n\\n' + message['content'] %}{%- endif %}
{%- set ns.first = false %}
{%- endif %}
{%- endfor %}
{%- if tools %}
{%- if ns.system %}{%- set ns.system = ns.system + '\\n\\n' %}{%- endif %}
{%- set ns.system = ns.system + '## Tools\\nTo call a function, answer with <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n\`\`\`json\\nARGUMENTS\\n\`\`\`<｜tool▁call▁end｜><｜tool▁calls▁end｜>. Functions:\\n' %}
{%- for tool in tools %}
{%- set ns.system = ns.system + '\\n### ' + tool['function']['name'] + '\\n' + (tool['function']['description'] or '') + '\\nParameters: ' + (tool['function']['parameters'] | tojson) + '\\n' %}
{%- endfor %}
{%- endif %}
{{- ns.system }}
{%- for message in messages %}
{%- if message['role'] == 'tool' %}
{%- if ns.in_outputs %}{{- '\\n' }}{%- else %}{{- '<｜tool▁outputs▁begin｜>' }}{%- set ns.in_outputs = true %}{%- endif %}
{{- '<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>' }}
{%- else %}
{%- if ns.in_outputs %}{{- '<｜tool▁outputs▁end｜>' }}{%- set ns.in_outputs = false %}{%- endif %}
{%- if message['role'] == 'user' %}
{{- '<｜User｜>' + message['content'] }}
{%- elif message['role'] == 'assistant' %}
{%- set content = message['content'] or '' %}
{%- if '</think>' in content %}{%- set content = content.split('</think>')[-1] %}{%- endif %}
{{- '<｜Assistant｜>' + content }}
{%- if message['tool_calls'] %}
{{- '<｜tool▁calls▁begin｜>' }}
{%- for tc in message['tool_calls'] %}
{%- if not loop.first %}{{- '\\n' }}{%- endif %}
{{- '<｜tool▁call▁begin｜>function<｜tool▁sep｜>' + tc['function']['name'] + '\\n\`\`\`json\\n' + tc['function']['arguments'] + '\\n\`\`\`<｜tool▁call▁end｜>' }}
{%- endfor %}
{{- '<｜tool▁calls▁end｜>' }}
{%- endif %}
{{- '<｜end▁of▁sentence｜>' }}
{%- endif %}
{%- endif %}
{%- endfor %}
{%- if ns.in_outputs %}{{- '<｜tool▁outputs▁end｜>' }}{%- endif %}
{%- if add_generation_prompt %}
{{- '<｜Assistant｜>' }}
{%- if thinking %}{{- '<think>\\n' }}{%- endif %}
{%- endif %}`;
