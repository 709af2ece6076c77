/* weight_args.c -- SWarp's weight options (--weight-type, --weight-thresh,
 * --weight-suffix), the data-quality masks (--dq, --dq-bits) and the
 * variance and DQ outputs (--variance-out, --rms-out, --dq-out), parsed
 * and checked once for every command that coadds: `tessera mosaic` and
 * `tessera reproject --method drizzle` take the same names with the same
 * meaning and the same messages. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_weight_args_init(cli_weight_args_t *w, int argc) {
  memset(w, 0, sizeof *w);
  w->type = -1;
  w->dqs = calloc((size_t)argc + 1, sizeof *w->dqs);
  w->thresh = calloc((size_t)argc + 1, sizeof *w->thresh);
  w->cap = argc;
  return w->dqs && w->thresh ? 0 : -1;
}

void cli_weight_args_free(cli_weight_args_t *w) {
  free(w->dqs);
  free(w->thresh);
  w->dqs = NULL;
  w->thresh = NULL;
}

static const char *type_name(int type) {
  return type == TSR_WEIGHT_MAP_WEIGHT     ? "MAP_WEIGHT"
         : type == TSR_WEIGHT_MAP_VARIANCE ? "MAP_VARIANCE"
         : type == TSR_WEIGHT_MAP_RMS      ? "MAP_RMS"
                                           : "BACKGROUND";
}

int cli_weight_option(const char *cmd, int c, const char *arg, cli_weight_args_t *w) {
  int64_t v;
  switch (c) {
  case CLI_WTYPE:
    if ((w->type = tsr_weight_type_parse(arg)) < 0)
      return usage_error("%s: --weight-type '%s': expected MAP_WEIGHT, MAP_VARIANCE, MAP_RMS or "
                         "BACKGROUND", cmd, arg);
    return 0;
  case CLI_WTHRESH: {
    /* SWarp's list: one per input, the last repeating. */
    char *copy = strdup(arg), *tok, *save = NULL;
    int bad = copy == NULL;
    w->n_thresh = 0;
    for (tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && !bad && w->n_thresh < w->cap;
         tok = strtok_r(NULL, ",", &save))
      bad = parse_real(tok, &w->thresh[w->n_thresh]) != 0 || !(w->thresh[w->n_thresh++] >= 0);
    free(copy);
    if (bad || w->n_thresh == 0)
      return usage_error("%s: --weight-thresh '%s': expected T or T1,T2,... (>= 0), one per "
                         "input, the last repeating", cmd, arg);
    return 0;
  }
  case CLI_WSUFFIX: w->suffix = arg; return 0;
  case CLI_DQ: w->dqs[w->n_dqs++] = arg; return 0;
  case CLI_DQ_BITS:
    if (parse_int64(arg, &v) != 0 || v < 0 || v > 0xFFFFFFFFll)
      return usage_error("%s: --dq-bits '%s': expected a bit mask, 0 to 4294967295 (0 = any "
                         "nonzero DQ value)", cmd, arg);
    w->dq_bits = (uint32_t)v;
    return 0;
  case CLI_VARIANCE_OUT: w->variance_out = arg; return 0;
  case CLI_RMS_OUT: w->rms_out = arg; return 0;
  case CLI_DQ_OUT: w->dq_out = arg; return 0;
  default: return -1;
  }
}

int cli_weight_check(const char *cmd, const cli_weight_args_t *w, int n_inputs, int n_weights) {
  if (w->n_dqs && w->n_dqs != n_inputs)
    return usage_error("%s: %d --dq for %d inputs: expected one per input, in order", cmd, w->n_dqs,
                       n_inputs);
  if (w->dq_out && !w->n_dqs)
    return usage_error("%s: --dq-out goes with --dq (one data-quality image per input)", cmd);
  if (w->dq_bits && !w->n_dqs)
    return usage_error("%s: --dq-bits goes with --dq", cmd);
  if (w->suffix && n_weights)
    return usage_error("%s: --weight-suffix and --weight both name the weight maps; give one", cmd);
  if (w->suffix && w->type < 0)
    return usage_error("%s: --weight-suffix goes with --weight-type", cmd);
  if (w->type >= 0 && w->type != TSR_WEIGHT_BACKGROUND && !n_weights && !w->suffix)
    return usage_error("%s: --weight-type %s needs the weight maps: --weight FILE per input or "
                       "--weight-suffix", cmd, type_name(w->type));
  if (w->type == TSR_WEIGHT_BACKGROUND && n_weights)
    return usage_error("%s: --weight-type BACKGROUND takes the weights from the images "
                       "themselves: no --weight", cmd);
  if (w->n_thresh && w->type < 0)
    return usage_error("%s: --weight-thresh goes with --weight-type", cmd);
  return 0;
}

double cli_weight_thresh(const cli_weight_args_t *w, int i) {
  return w->n_thresh ? w->thresh[i < w->n_thresh ? i : w->n_thresh - 1] : NAN;
}

char *cli_weight_suffixed(const char *in, const char *suffix) {
  const char *dot = strrchr(in, '.'), *slash = strrchr(in, '/');
  size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - in) : strlen(in);
  char *p = malloc(stem + strlen(suffix) + 1);
  if (p) {
    memcpy(p, in, stem);
    strcpy(p + stem, suffix);
  }
  return p;
}
