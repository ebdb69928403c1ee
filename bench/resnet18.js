// The benchmarks' model: torchvision resnet18 (torch.manual_seed(0), a 10-class fc), scripted by
// the reference Python into argv[1] (and, given argv[2], its state dict there). Prints torch's version.
'use strict';

const EXPORT_RESNET18 = String.raw`
import sys, torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet18(weights=None)
m.fc = torch.nn.Linear(512, 10)
if len(sys.argv) > 2: torch.save(m.state_dict(), sys.argv[2])
torch.jit.script(m).save(sys.argv[1])
print(torch.__version__)
`;

/**
 * The timed PyTorch loop the benchmarks share, as Python text: AdamW (lr 1e-4) over `params`,
 * cross-entropy on one random batch (`batch` x 3 x `size` x `size`), `warmup` untimed steps, then
 * `steps` timed ones into `secs`. `net` names what runs forward (a DDP wrapper, say); where the
 * Python condition `barrierIf` holds, every rank waits for the others before and after the timed steps.
 */
function pyTimedSteps({ net = 'm', barrierIf = '' } = {}) {
  const sync = barrierIf ? `if ${barrierIf}:\n    dist.barrier()\n` : '';
  return `
opt = torch.optim.AdamW(params, lr=1e-4)
lossf = torch.nn.CrossEntropyLoss()
x = torch.randn(batch, 3, size, size)
y = torch.randint(0, 10, (batch,))
def step():
    loss = lossf(${net}(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()
for _ in range(warmup):
    step()
${sync}t = time.perf_counter()
for _ in range(steps):
    step()
${sync}secs = time.perf_counter() - t
`;
}

module.exports = { EXPORT_RESNET18, pyTimedSteps };
