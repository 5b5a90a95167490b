# bash completion for ckpttool -- generated from the Typer app by ckpttool/cli/docs.py, do not edit
_ckpttool() {
    local cur cmd opts i
    cur="${COMP_WORDS[COMP_CWORD]}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -*) ;;
            *) cmd="${COMP_WORDS[i]}"; break ;;
        esac
    done
    case "${COMP_WORDS[COMP_CWORD-1]}" in
        --names) COMPREPLY=($(compgen -W "key model" -- "$cur")); return ;;
        --to) COMPREPLY=($(compgen -W "tf safetensors npz" -- "$cur")); return ;;
        --layout) COMPREPLY=($(compgen -W "torch tf" -- "$cur")); return ;;
        --dtype) COMPREPLY=($(compgen -W "bfloat16 float16 float32 float64" -- "$cur")); return ;;
        --mode) COMPREPLY=($(compgen -W "auto min max" -- "$cur")); return ;;
        --format) COMPREPLY=($(compgen -W "json pbtxt" -- "$cur")); return ;;
        --part) COMPREPLY=($(compgen -W "graph saver signatures collections meta_info" -- "$cur")); return ;;
    esac
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "ls latest inspect verify manifest prune policy repair rename-vars convert average diff freeze export-json watch completion --debug --no-color --version --storage-option -h --help" -- "$cur"))
        return
    fi
    case "$cmd" in
        ls) opts="--recursive -r --metric --mode --metrics --events --name-pattern --sort --filter --summary --keep-last --keep-every-hours --keep-every-steps --keep-step --min-age --keep-best --drop-unscored --json --quiet -q -h --help" ;;
        latest) opts="--absolute --step --complete --best --metric --mode --metrics --events --name-pattern --allow-damaged-metrics --json -h --help" ;;
        inspect) opts="--filter -f --name --all -a --stats --values --full --limit --tree --slices --hash --meta --graph --min-elements --names --json --quiet -q -h --help" ;;
        verify) opts="--all -a --recursive -r --graph --manifest -m --tensors --ignore-names --quick --json --quiet -q -h --help" ;;
        manifest) opts="--output -o --overwrite --json -h --help" ;;
        prune) opts="--policy --keep-last --keep-every-hours --keep-every-steps --keep-step --min-age --keep-best --metric --mode --metrics --events --name-pattern --drop-unscored --allow-damaged-metrics --clean --ignore-bad-state --recursive -r --budget --drop-failed-runs --dry-run -n --yes -y --json --quiet -q -h --help" ;;
        policy) opts="--json --quiet -q -h --help" ;;
        repair) opts="--dry-run -n --json -h --help" ;;
        rename-vars) opts="--map --map-file --regex --add-prefix --strip-prefix --ema --drop --keep --drop-optimizer --link --overwrite --no-update-state --dry-run -n --json --quiet -q -h --help" ;;
        convert) opts="--to --names --map --map-file --regex --add-prefix --strip-prefix --ema --drop --keep --drop-optimizer --sep --strict --shard-size --metadata --no-source-metadata --layout --transpose --dtype --keep-dtype --like --partial --graph --min-elements --overwrite --no-update-state --dry-run -n --json --quiet -q -h --help" ;;
        average) opts="--output -o --last --steps --best --metric --metrics --mode --allow-damaged-metrics --keep-optimizer --to --names --map --map-file --regex --add-prefix --strip-prefix --ema --drop --keep --sep --strict --shard-size --metadata --layout --transpose --dtype --keep-dtype --overwrite --dry-run -n --json --quiet -q -h --help" ;;
        diff) opts="--rtol --atol --filter -f --by-hash --names --graph --min-elements --json --quiet -q -h --help" ;;
        freeze) opts="--output -o --output-nodes --tags --signature --text --clear-devices --keep-devices --check --input-shape --overwrite --json -h --help" ;;
        export-json) opts="--format --part --output -o --overwrite --json -h --help" ;;
        watch) opts="--exec -e --shell --verify --state --since --once --timeout --interval --on-failure --json -h --help" ;;
        completion) opts="--install --json -h --help" ;;
        *) opts="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _ckpttool ckpttool
