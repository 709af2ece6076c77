/* usage.c -- what `tessera help`, `tessera help COMMAND` and `tessera
 * COMMAND --help` print: an overview, and each command's own usage, kept
 * apart so that asking about one command shows that command only. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "sample.h"

typedef struct {
  const char *name, *summary, *usage;
} command_usage_t;

/* Options that reproject and mosaic share (cli_run_options). */
#define RUN_OPTIONS                                                                      \
  "        --hdu N|NAME[,VER]      input HDU: a number counted from 1 as cfitsio does (the\n" \
  "                                primary HDU is 1; default the first with data), or an\n"  \
  "                                EXTNAME and optional EXTVER\n"                             \
  "        --method interp|adaptive|exact|drizzle\n"                                        \
  "                                reprojection method (default interp; drizzle:\n"        \
  "                                reproject only, see its options)\n"                     \
  "        --order ORDER           nearest-neighbor|bilinear|biquadratic|bicubic|\n"        \
  "                                lanczos2|lanczos3|lanczos4 (default bilinear;\n"         \
  "                                interp only; lanczosN is SWarp's RESAMPLING_TYPE\n"      \
  "                                LANCZOSN: NaN within N px of the input's edge)\n"        \
  "        --region X1:X2,Y1:Y2    compute only this output region (FITS-style,\n"          \
  "                                1-based, inclusive); OUT holds exactly it\n"             \
  "        --block WxH             output block size (default 256x256, or 512x512\n"        \
  "                                for inputs over 256 MiB)\n"                              \
  "        --mapping-tolerance PX  coordinate interpolation error allowed, in\n"            \
  "                                input pixels (default 1e-4; 0 = exact)\n"                \
  "        --no-roundtrip          skip reproject's round-trip coordinate check\n"          \
  "        --footprint FILE        also write the footprint\n"                              \
  "        --dtype float32|float64 output type (default float32, float64 for a\n"           \
  "                                float64 input)\n"                                        \
  "        --progress | --quiet    force the progress bar / print nothing\n"                \
  "        -j, --jobs N            workers (default 0 = one per CPU;\n"                     \
  "                                1 = compute in this process)\n"                          \
  "        --executor E            local (default): threads, or processes with\n"           \
  "                                --retries/--task-timeout; threads: one\n"                \
  "                                process, no copies; processes: forked workers,\n"        \
  "                                a crashing or hung block is retried; mpi: run\n"         \
  "                                under mpirun, every rank computing blocks for\n"         \
  "                                rank 0, which writes OUT\n"                              \
  "        --retries N             retries of a block whose worker died (default 2;\n"      \
  "                                implies --executor processes)\n"                         \
  "        --task-timeout S        kill and retry a block running longer (default\n"        \
  "                                none; implies --executor processes)\n"                   \
  "        --cache DIR             keep computed blocks zstd-compressed in DIR and\n"       \
  "                                reuse them (default: $TESSERA_CACHE, if set)\n"          \
  "        --no-cache              ignore $TESSERA_CACHE\n"                                 \
  "        --cache-max-bytes N     cache budget; least recently used blocks are\n"          \
  "                                evicted past it; suffix K, M, G or T (default 4G)\n"

#define TARGET_OPTIONS                                                                   \
  "        --projection CODE       a FITS projection code: TAN, SIN, ZEA, CAR, ...\n"       \
  "                                (default TAN)\n"                                         \
  "        --frame F               icrs|fk5|galactic|ecliptic (default: the first\n"        \
  "                                input's)\n"                                              \
  "        --resolution ARCSEC     pixel size (default: the finest input's)\n"              \
  "        --reference LON,LAT     CRVAL in degrees (default: the mean of the\n"            \
  "                                inputs' reference points)\n"                             \
  "        --auto-rotate           turn the grid to the minimum-area rectangle\n"

static const command_usage_t commands[] = {
    {"reproject", "reproject a FITS image onto a target's WCS and shape",
     "usage: tessera reproject INPUT --target TARGET -o OUT [options]\n"
     "       tessera reproject IN... --method drizzle --target TARGET -o OUT [options]\n"
     "  reproject a FITS image onto the WCS and shape of TARGET (a .hdr header\n"
     "  file with NAXISn, or a FITS file); OUT may not be INPUT or TARGET\n"
     "  options:\n" RUN_OPTIONS
     "  adaptive only (reproject_adaptive's options and defaults):\n"
     "        --kernel gaussian|hann  (default gaussian)\n"
     "        --kernel-width PX       Gaussian width, +-1 sigma (default 1.3)\n"
     "        --sample-region-width PX  Gaussian truncation width (default 4)\n"
     "        --boundary-mode MODE    strict|constant|grid-constant|ignore|\n"
     "                                ignore_threshold|nearest (default strict)\n"
     "        --boundary-fill-value V       constant modes (default 0)\n"
     "        --boundary-ignore-threshold F ignore_threshold mode (default 0.5)\n"
     "        --x-cyclic, --y-cyclic  wrap that input axis\n"
     "        --center-jacobian       Jacobian from transforms at +-0.5 px\n"
     "        --despike-jacobian      replace Jacobian spikes (all-sky wraps)\n"
     "        --conserve-flux         scale by the pixel area ratio (flux images)\n"
     "        --bad-value-mode strict|ignore|constant  NaN/inf inputs (default strict)\n"
     "        --bad-fill-value V      bad-value-mode constant (default 0)\n"
     "  exact only (reproject_exact: overlap-weighted mean, footprint = coverage):\n"
     "        --nan-mode propagate|ignore  NaN inputs spoil the outputs they touch, as\n"
     "                                in reproject (default), or get no weight\n"
     "  HEALPix inputs (a binary table with PIXTYPE = 'HEALPIX'; reproject_from_healpix,\n"
     "  --order nearest-neighbor or bilinear, or --method exact: flux-conserving\n"
     "  overlap of the map's pixels, with --nan-mode; UNSEEN read as NaN):\n"
     "        --field N|NAME          value column, 0-based or by TTYPE (default 0)\n"
     "        --nested, --ring        override the file's ORDERING\n"
     "  drizzle (tessera reproject IN... --method drizzle; STScI drizzle 1.13's\n"
     "  algorithm and names; inputs drizzled in order onto TARGET; OUT float32):\n"
     "        --kernel K              square|point|turbo|gaussian|lanczos2|lanczos3|\n"
     "                                tophat (default square)\n"
     "        --pixfrac F             drop size in input pixels, (0, 10] (default 1)\n"
     "        --expin S[,S...]        exposure time(s), s: one for all or one per input\n"
     "                                (default 1)\n"
     "        --wt-scl exptime|expsq|X  weight scaling (default exptime)\n"
     "        --weight W              an input weight map per input, in order (repeat);\n"
     "                                without --weight-type, drizzle's inwht\n"
     "        --weight-type T         MAP_WEIGHT|MAP_VARIANCE|MAP_RMS|BACKGROUND: SWarp's\n"
     "                                weight maps, each pixel weighted 1 / variance\n"
     "        --weight-thresh T[,T..] WEIGHT_THRESH, per input (the last repeats)\n"
     "        --weight-suffix SUF     each input's weight map: its name, extension\n"
     "                                replaced by SUF (SWarp's WEIGHT_SUFFIX)\n"
     "        --dq FILE               a data-quality image or mask per input (repeat):\n"
     "                                flagged pixels drop nothing\n"
     "        --dq-bits N             DQ bits that flag a pixel (default: any)\n"
     "        --in-units cps|counts   counts are divided by expin (default cps)\n"
     "        --out-units cps|counts  counts: times the summed expin (default cps)\n"
     "        --fillval V|NaN|INDEF   where no drop landed (default INDEF: 0)\n"
     "        --weight-out FILE       write drizzle's output weight image\n"
     "        --context-out FILE      write the context image (bit k of plane k/32 set\n"
     "                                where input k dropped weight; float64 holding\n"
     "                                drizzle's int32 values; a cube past 32 inputs)\n"     "        --variance-out FILE     the variance of OUT propagated through the drops:\n"
     "                                sum(w^2 var) / sum(w)^2 (float32; NaN where no\n"
     "                                drop landed)\n"
     "        --rms-out FILE          its square root\n"
     "        --dq-out FILE           the OR of the DQ words of the pixels that dropped\n"
     "        --mapping-tolerance PX  pixmap interpolation error allowed, output\n"
     "                                pixels (default 1e-5 for drizzle; 0 = exact)\n"},
    {"mosaic", "reproject several images onto one target and combine them",
     "usage: tessera mosaic IN... (--target TARGET | --auto) -o OUT [options]\n"
     "  reproject every input onto one target and combine them\n"
     "  (reproject_and_coadd); each input is read only where it lands\n"
     "  options:\n"
     "        --target TARGET         a .hdr header file with NAXISn, or a FITS file\n"
     "        --auto                  a target covering every input (as mosaic-header)\n" TARGET_OPTIONS
     "        --combine C             mean|sum|first|last|min|max|median (reproject's;\n"
     "                                default mean, footprint-weighted), or SWarp's:\n"
     "                                weighted|average|sum-unweighted|chi-old|chi-mode|\n"
     "                                chi-mean|clipped|weighted_weight|median_weight,\n"
     "                                flags: and|nand|or|nor\n"
     "        --combine-type T        SWarp's COMBINE_TYPE name (WEIGHTED, CLIPPED, SUM,\n"
     "                                CHI-MEAN, ...; SUM is sum-unweighted)\n"
     "        --clip-sigma S          clipped: CLIP_SIGMA (default 4)\n"
     "        --clip-ampfrac F        clipped: CLIP_AMPFRAC (default 0.3)\n"
     "        --clip-log FILE         clipped: write SWarp's clip log of rejected pixels\n"
     "        --gain-keyword K        clipped: the inputs' gain keyword (default GAIN)\n"
     "        --gain-default G        clipped: gain without one (default 0 = infinite)\n"
     "        --weights W, --weight W a weight map per input, in order (repeat); without\n"
     "                                --weight-type they multiply the footprints\n"
     "        --weight-type T         MAP_WEIGHT|MAP_VARIANCE|MAP_RMS|BACKGROUND: SWarp's\n"
     "                                weights, reprojected as variances\n"
     "        --weight-thresh T[,T..] WEIGHT_THRESH, per input (the last repeats)\n"
     "        --weight-suffix SUF     each input's weight map: its name, extension\n"
     "                                replaced by SUF (SWarp's WEIGHT_SUFFIX)\n"
     "        --dq FILE               a data-quality image or mask per input (repeat)\n"
     "        --dq-bits N             DQ bits that take a pixel out (default: any)\n"
     "        --weight-out FILE       SWarp's output weight map of the combine\n"
     "        --variance-out FILE     the variance of the mosaic (where defined)\n"
     "        --rms-out FILE          its square root\n"
     "        --dq-out FILE           the OR of the contributors' DQ values\n"
     "        --match-background      subtract per-input offsets solved from the\n"
     "                                overlaps' median differences (printed, unless\n"
     "                                --quiet)\n"
     "        --background-reference N  keep input N's level (default: mean offset 0)\n"
     "        --offsets-out FILE      write the offsets as CSV: input,offset\n"
     "        --blank V               value where no input covers (default nan)\n" RUN_OPTIONS},
    {"blot", "interpolate a drizzled image back onto an input's grid (drizzle's blot)",
     "usage: tessera blot INPUT --target TARGET -o OUT [options]\n"
     "  drizzle's blot: INPUT (a drizzled image in cps) interpolated at each pixel\n"
     "  centre of TARGET (a .hdr header file with NAXISn, or a FITS file), times\n"
     "  exptime / (INPUT pixel scale / TARGET pixel scale)^2; float32\n"
     "  options:\n"
     "        --interp I              nearest|linear|poly3|poly5|sinc|lan3|lan5\n"
     "                                (default poly5)\n"
     "        --sinscl S              sinc's scale (default 1)\n"
     "        --exptime S             exposure time the values are multiplied by\n"
     "                                (default 1)\n"
     "        --misval V              value off INPUT (default 0)\n"
     "        --hdu, --region, --block, --mapping-tolerance (default 1e-5), -j,\n"
     "        --executor, --cache, --progress, --quiet: as for reproject\n"},
    {"mosaic-header", "write a target header covering every input",
     "usage: tessera mosaic-header IN... -o TARGET.hdr [options]\n"
     "  write a target covering every input (find_optimal_celestial_wcs)\n"
     "  options:\n" TARGET_OPTIONS
     "        --hdu N|NAME[,VER]      input HDU (as for reproject)\n"
     "        --quiet                 print nothing\n"},
    {"to-healpix", "reproject images onto a HEALPix map (a FITS table)",
     "usage: tessera to-healpix IN... --nside N -o OUT.fits [options]\n"
     "  reproject FITS images onto a HEALPix map (reproject_to_healpix: each map\n"
     "  pixel centre interpolated in the image, NaN off it); several inputs make\n"
     "  a mosaic.  OUT is a HEALPix binary table (PIXTYPE, ORDERING, NSIDE,\n"
     "  COORDSYS), as healpy, astropy-healpix and 'tessera reproject' read\n"
     "  options:\n"
     "        --nside N               map resolution, 1 to 2^29 (required)\n"
     "        --nested | --ring       pixel ordering (default RING; NESTED needs\n"
     "                                nside a power of 2)\n"
     "        --frame F               galactic|icrs|ecliptic (or G, C, E): the map's\n"
     "                                frame (default: the first input's, if one of\n"
     "                                them)\n"
     "        --method interp|exact   interp (default): each map pixel centre\n"
     "                                interpolated; exact: flux-conserving overlap,\n"
     "                                each map pixel the area-weighted mean of the\n"
     "                                image pixels it overlaps\n"
     "        --order ORDER           interp: nearest-neighbor|bilinear|biquadratic|\n"
     "                                bicubic (default bilinear)\n"
     "        --nan-mode propagate|ignore  exact: NaN image pixels spoil the map\n"
     "                                pixels they overlap (default), or get no weight\n"
     "        --partial               write only the pixels with a value, as an\n"
     "                                explicit table (a PIXEL column)\n"
     "        --combine C             several inputs: mean|sum|first|last|min|max|\n"
     "                                median (default mean)\n"
     "        --range FIRST:LAST      write only pixels FIRST to LAST (0-based,\n"
     "                                inclusive; FIRSTPIX/LASTPIX say so)\n"
     "        --chunk N               map pixels per block (default: bands of rings\n"
     "                                of up to 2 Mi pixels in RING order, 65536 in\n"
     "                                NESTED order or for orders 2 and 3)\n"
     "        --hdu N|NAME[,VER]      input HDU (as for reproject)\n"
     "        --dtype float32|float64 output type (default float32, float64 for a\n"
     "                                float64 input)\n"
     "        --progress | --quiet    force the progress bar / print nothing\n"
     "        -j, --jobs N            workers (default 0 = one per CPU;\n"
     "                                1 = compute in this process)\n"
     "        --executor E            local|threads|processes|mpi (as for reproject)\n"
     "        --retries N, --task-timeout S   as for reproject\n"
     "        --cache DIR, --no-cache, --cache-max-bytes N   as for reproject\n"},
    {"preview", "an 8-bit PNG of a 2-D image",
     "usage: tessera preview FITS -o PNG [options]\n"
     "  an 8-bit grey PNG of a 2-D image, NaN transparent, north up\n"
     "  options:\n"
     "        --stretch linear|sqrt|log|asinh  (default linear)\n"
     "        --scale zscale|minmax|PERCENT    the interval shown (default zscale)\n"
     "        --hdu N|NAME[,VER]      input HDU (as for reproject)\n"
     "        --max-size PX           pixels on the longer side at most (default 2048)\n"
     "        --progress | --quiet    force the progress bar / print nothing\n"},
    {"hips", "a HiPS directory (tiles, Allsky, MOC) for Aladin from FITS images",
     "usage: tessera hips IN... -o DIR [options]\n"
     "  write a HiPS (IVOA HiPS 1.0: Norder*/Dir*/Npix*.fits and .png tiles,\n"
     "  properties, index.html, Norder0..3/Allsky, Moc.fits) of one or several\n"
     "  2-D images, with reproject 0.21's tile geometry; DIR must be new (its\n"
     "  parent must exist) or empty, and nothing is written outside it\n"
     "  options:\n"
     "        --level K               deepest HiPS order, 0..26-log2(tile width)\n"
     "                                (default: the lowest whose pixels are no\n"
     "                                larger than the finest input's)\n"
     "        --tile-width N          tile side, a power of two, 8..4096 (default 512)\n"
     "        --frame F               equatorial|galactic|ecliptic (default equatorial)\n"
     "        --order ORDER           nearest-neighbor|bilinear|biquadratic|bicubic\n"
     "                                (default bilinear)\n"
     "        --mapping-tolerance PX  as for reproject (default 1e-4)\n"
     "        --combine C             several inputs: mean|sum|first|last|min|max|\n"
     "                                median (default mean)\n"
     "        --formats fits|fits,png tile files (default fits,png)\n"
     "        --cut LOW,HIGH          values shown black and white in PNG tiles\n"
     "                                (default: 0.5 and 99.5 percentiles of a sample)\n"
     "        --stretch S             PNG stretch linear|sqrt|log|asinh (default linear)\n"
     "        --title T               obs_title (default: DIR's name)\n"
     "        --no-moc                no Moc.fits\n"
     "        --hdu N|NAME[,VER]      input HDU (as for reproject)\n"
     "        --progress | --quiet    force the progress bar (in tiles) / print nothing\n"
     "        -j, --jobs N            workers (default 0 = one per CPU)\n"
     "        --executor E            local|threads|processes|mpi: under mpirun -n N\n"
     "                                every rank computes blocks of tiles and rank 0\n"
     "                                writes every file in DIR (only a --cache DIR\n"
     "                                need be shared by the ranks)\n"
     "        --retries N, --task-timeout S  as for reproject (processes)\n"
     "        --cache DIR             keep computed blocks in DIR: a rerun only\n"
     "                                decompresses them (default: $TESSERA_CACHE)\n"
     "        --no-cache, --cache-max-bytes N  as for reproject\n"},
    {"info", "shape, dtype and WCS of a FITS image, a HEALPix map or a .hdr header",
     "usage: tessera info FILE [--hdu N|NAME[,VER]] [--quiet]\n"
     "  a FITS image's HDU, shape, stored BITPIX, scaling, compression, the dtype\n"
     "  it is read as and its WCS; a HEALPix map's HDU, NSIDE, ORDERING, COORDSYS,\n"
     "  index scheme (implicit or explicit), pixels held, first and last pixel,\n"
     "  rows x values a row, the column read (--field 0) and every value column\n"
     "  with its index; or a .hdr header file's shape and WCS.  The report is the\n"
     "  output, so --quiet changes nothing\n"},
    {"cache", "a chunk cache's statistics; evict to a budget; clear",
     "usage: tessera cache stats|trim|clear [DIR] [--cache-max-bytes N] [--quiet]\n"
     "  stats: a cache's entries, size, compression ratio and the hits and\n"
     "         misses of its last runs\n"
     "  trim:  evict the least recently used blocks down to the budget\n"
     "         (--cache-max-bytes, default 4G)\n"
     "  clear: delete every block\n"
     "  DIR defaults to $TESSERA_CACHE; --quiet leaves out trim's and clear's\n"
     "  summary line\n"},
    {"sample", "write the sample sky image and target header",
     "usage: tessera sample DIR [--quiet]\n"
     "  write the sample sky (DIR/" TSR_SAMPLE_IMAGE ", 2048 x 2048, TAN, ICRS)\n"
     "  and a Galactic ZEA target (DIR/" TSR_SAMPLE_TARGET "); DIR is made if missing\n"},
    {"demo", "make the sample and reproject it",
     "usage: tessera demo [DIR] [--quiet]\n"
     "  write the sample into DIR (default ./sample) and reproject it onto its\n"
     "  target, saying where the output went and how long it took\n"},
    {"version", "print the versions of tessera and of the libraries it uses",
     "usage: tessera version | tessera --version\n"
     "  print the version of tessera and of the libraries it uses\n"},
    {"help", "print this overview, or a command's usage",
     "usage: tessera help [COMMAND]\n"
     "  print the list of commands, or COMMAND's usage (as COMMAND --help does)\n"},
};

const char *cli_usage(const char *cmd) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(commands[i].name, cmd) == 0)
      return commands[i].usage;
  return NULL;
}

void cli_overview(FILE *f) {
  fputs("usage: tessera COMMAND [ARGS]\n\ncommands:\n", f);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
  fputs("\n'tessera COMMAND --help' (or 'tessera help COMMAND') shows a command's options.\n"
        "Exit status: 0 done, 1 failed, 2 wrong arguments, 130 interrupted.\n",
        f);
}
