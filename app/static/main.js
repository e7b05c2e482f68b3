// The page's entry module: a predictive keypad over /topk and /predict, a training form over /jobs with live
// progress from /jobs/{id}/events, and the model table. ES modules served as they are: no build step, no
// network beyond this server.
import { onKeyEntered } from "./api.js";
import { buildKeypad } from "./keypad.js";
import { refreshInfo, refreshModels } from "./models.js";
import { buildTraining, refreshJobs } from "./training.js";

buildKeypad();
buildTraining();
onKeyEntered(refreshJobs);  // the jobs list is hidden until a key is known
await refreshInfo();  // first: it says whether a key is required, which refreshJobs needs
await Promise.all([refreshModels(), refreshJobs()]);
