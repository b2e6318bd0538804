import torch, os, shutil
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model, PeftModel
base_dir = '/work/main/Fixtures/tiny-llama/untied-fp32'
out = 'OUT'
shutil.rmtree(out, ignore_errors=True)
def make(name, r, alpha, seed, targets):
    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
    p = get_peft_model(m, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets))
    for n, t in p.named_parameters():
        if 'lora_' in n: t.data = torch.randn_like(t) * 0.1
    p.save_pretrained(f'{out}/{name}')
make('a', 4, 8, 1, ['q_proj','v_proj','down_proj'])
make('b', 4, 16, 2, ['q_proj','k_proj','down_proj'])
make('c', 2, 2, 3, ['q_proj','v_proj','down_proj'])
m = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
p = PeftModel.from_pretrained(m, f'{out}/a', adapter_name='a')
p.load_adapter(f'{out}/b', adapter_name='b')
p.load_adapter(f'{out}/c', adapter_name='c')
p.add_weighted_adapter(['a','b'], [0.7, -0.3], 'linear_ab', combination_type='linear')
p.add_weighted_adapter(['a','c'], [0.5, 2.0], 'cat_ac', combination_type='cat')
p.save_pretrained(f'{out}/combined', selected_adapters=['linear_ab','cat_ac'])
print(os.listdir(f'{out}/combined'))
