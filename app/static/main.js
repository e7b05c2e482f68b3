// The page's entry module: a predictive keypad over /topk and /predict, a training form over /jobs with live
// progress from /jobs/{id}/events, the model table, the aliases with their history and running rollouts, and the
// learning loop. ES modules served as they are: no build step, no network beyond this server.
import { onProductionMoved, refreshAliases, startAliasRefresh } from "./aliases.js";
import { onKeyEntered } from "./api.js";
import { buildKeypad } from "./keypad.js";
import { buildLearning, refreshLearning, startLearningRefresh } from "./learning.js";
import { afterModelChange, refreshInfo, refreshModels } from "./models.js";
import { buildTraining, refreshJobs } from "./training.js";

buildKeypad();
buildTraining();
buildLearning();
onKeyEntered(refreshJobs);  // the jobs list is hidden until a key is known
await refreshInfo();  // first: it says whether a key is required, which refreshJobs needs
onProductionMoved(afterModelChange);  // moved elsewhere (a job, a rollout, another tab): the keypad follows
await Promise.all([refreshModels(), refreshJobs(), refreshAliases(), refreshLearning()]);
startAliasRefresh();
startLearningRefresh();
