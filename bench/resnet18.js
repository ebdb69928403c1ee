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

module.exports = { EXPORT_RESNET18 };
