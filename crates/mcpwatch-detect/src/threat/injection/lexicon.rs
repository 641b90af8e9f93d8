//! The words and phrases the layers look for, in English, German, French, Spanish, Italian,
//! Portuguese, Russian, Chinese and Japanese, written as they read after normalisation (lower
//! case, accents folded: "instruções" is written "instrucoes"), and the misspelling corrector.
//!
//! Weights say how much one match says on its own; [`super::score`] adds them up per layer.
//! A phrase that describes an attack ("attackers may ask the model to ignore its
//! instructions") must weigh less than one that performs it, so the instruction patterns
//! require an imperative position: the start of a sentence or line, or after "please", "now",
//! "and", "must"…, never after "to", "can" or "may".

use std::collections::HashMap;

use regex::Regex;

use super::Layer;

/// (layer, label, weight, pattern). A pattern starting `IMP` counts only in an imperative
/// position ([`imperative_at`]); `VERBS` stands for [`VERBS`].
#[rustfmt::skip]
const PHRASES: &[(Layer, &str, f32, &str)] = &[
    // Instructions addressed to the model.
    (Layer::Instruction, "override of prior instructions", 1.0,
     r"IMP(?:ignore|disregard|forget|override|bypass|discard|neglect|overrule|abandon|skip)\s+(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:your|the|my|these|those)?\s*(?:(?:previous|prior|earlier|preceding|former|original|initial|existing|old|above|system|other)\s+(?:and\s+(?:following|subsequent)\s+)?)+(?:instructions|prompts?|directions|directives|guidelines|rules|commands|orders|guidance|context|programming|constraints|restrictions|messages|tasks?)\b"),
    (Layer::Instruction, "override of everything before", 1.0,
     r"IMP(?:forget|ignore|disregard|discard)\s+(?:about\s+)?(?:everything|all|anything|whatever)\s+(?:above|before|else|previously|so\s+far|you\s+(?:were|have\s+been)\s+(?:told|given))\b"),
    (Layer::Instruction, "override of everything before", 1.0,
     r"IMP(?:forget|ignore|disregard|discard)\s+(?:all\s+of\s+)?the\s+(?:above|previous|preceding|foregoing)(?:\s+(?:text|content|message|prompt))?\s*(?:[.,;:!\n]|and\b|then\b)"),
    (Layer::Instruction, "override of everything before", 1.0,
     r"\bstop\s+(?:everything|what\s+you\s+are\s+doing|all\s+(?:tasks|actions|other\s+tasks))\b"),
    (Layer::Instruction, "override of everything before (de, fr, es, it, pt, ru, zh, ja)", 0.8,
     r"(?:忽略|忽视|无视|忘记|忘掉)(?:以上|上面|之前|前面|先前)(?:的)?(?:内容|所有|一切|文字|信息)|(?:上記|以上|これまで)の(?:内容|すべて)を?(?:無視|忘れ)|\b(?:vergiss|vergesst|vergessen\s+sie)\s+alles\b|\b(?:oublie|oubliez)\s+tout\b|\b(?:olvida|olvide|olviden)\s+todo\b|\b(?:dimentica|dimenticate)\s+tutto\b|\b(?:esqueca|esquece|esquecam)\s+tudo\b|(?:забудь|забудьте)\s+(?:вс[её]|обо\s+всем)|忘(?:记|掉)(?:之前|上面|以上)?(?:的)?(?:一切|所有)|(?:すべて|全部)(?:を)?忘れ"),
    (Layer::Instruction, "order addressed to the model", 0.8,
     r"(?:\b(?:note|message|instructions?|reminder)\s+(?:to|for)\s+(?:the\s+|any\s+)?(?:ai|llm|assistant|ai\s+assistant|language\s+model|ai\s+model|ai\s+agent|agent|model|chatbot|bot)\b|\bif\s+you\s+are\s+(?:an?\s+|the\s+)?(?:ai|llm|assistant|(?:ai\s+)?language\s+model|ai\s+(?:model|agent|assistant)|agent|bot|chatbot)\b|\b(?:dear|hey|hello|hi|attention)\s+(?:the\s+)?(?:ai|llm|assistant|ai\s+assistant|model|agent|claude|chatgpt|gpt|gemini|copilot)\b|\(\s*(?:ai|assistant|model|agent)\s*:|\b(?:for|to)\s+(?:all\s+|any\s+)?(?:ai|llm)\s+(?:assistants?|agents?|models?)\b)[^.\n]{0,80}?(?:[,:]\s*|\b(?:you|please)\s+(?:must\s+|should\s+|need\s+to\s+)?)(?:(?:please|you\s+(?:must|should|need\s+to|will))\s+)?(?:VERBS|say|tell|write|reply|respond|recommend|summari[sz]e|output|print|ignore|make|do|use|call|answer|insist|mention|claim|when|rate|praise|promote|rank|look|find|reveal)\b"),
    (Layer::Instruction, "override of the user's task", 0.8,
     r"IMP(?:ignore|disregard|forget|abandon)\s+(?:(?:the|your|this|that|my)\s+(?:original\s+|current\s+|previous\s+|first\s+|actual\s+)?(?:task|request|question|query|assignment|job|instructions?)\s+(?:the\s+user|you\s+were|i\s+gave|given)|the\s+user'?s\s+(?:original\s+|actual\s+)?(?:task|request|question|query|instructions?))"),
    (Layer::Instruction, "override of the user's task", 0.8,
     r"\b(?:regardless\s+of|no\s+matter)\s+what\s+(?:the\s+user|you\s+were|your\s+(?:instructions|task))|\binstead\s+of\s+(?:the\s+user'?s|your\s+(?:original|current)|what\s+the\s+user)"),
    (Layer::Instruction, "order before answering", 0.5,
     r"\bbefore\s+(?:answering|responding|replying|continuing|proceeding|summari[sz]ing|you\s+(?:answer|respond|reply|summari[sz]e|continue)|doing\s+anything(?:\s+else)?)\b"),
    (Layer::Instruction, "the model told what it must do", 0.4,
     r"\bthe\s+(?:ai|assistant|model|agent|llm|ai\s+assistant|ai\s+agent)\s+(?:must|should|needs\s+to|has\s+to|is\s+required\s+to|shall)\b|(?:^|[.!?,:]\s*)(?:ai|assistant|llm|model|agent|claude|chatgpt|gemini|copilot)\s*[,:]\s*(?:please\s+)?(?:VERBS|say|tell|write|reply|respond|recommend|output|print|ignore|do|call|when|look|find|reveal)"),
    (Layer::Instruction, "override of instructions", 0.6,
     r"IMP(?:ignore|disregard|forget|override|bypass|discard|overrule)\s+(?:all|any|every|your|the)\s+(?:\w+\s+){0,2}?(?:instructions|prompts?|directions|directives|guidelines|rules|commands|orders|guidance|programming|restrictions)\b"),
    (Layer::Instruction, "mention of ignoring instructions", 0.3,
     r"\b(?:ignore|ignoring|disregard|disregarding|forget|override|overriding|bypass|discard)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:(?:your|the|its|their|my|previous|prior|earlier|preceding|original|initial|system|above)\s+){1,3}(?:instructions|prompts?|directions|directives|guidelines|rules|commands|orders)\b"),
    (Layer::Instruction, "override of prior instructions (de)", 1.0,
     r"\b(?:ignoriere|ignoriert|ignorieren sie|vergiss|vergesst|vergessen sie|missachte|missachten sie|verwirf|uberschreibe)\s+(?:\w+\s+){0,3}?(?:anweisungen|anweisung|instruktionen|befehle|regeln|vorgaben|richtlinien|auftrage|aufgaben)|\b(?:alle\s+)?(?:vorherigen|bisherigen|vorigen|obigen|fruheren|ursprunglichen)\s+(?:anweisungen|instruktionen|befehle|regeln|vorgaben)\s+(?:\w+\s+)?(?:ignorieren|vergessen|missachten|verwerfen)"),
    (Layer::Instruction, "override of prior instructions (fr)", 1.0,
     r"\b(?:ignore|ignorez|oublie|oubliez|neglige|negligez|ne tiens pas compte|ne tenez pas compte)\s+(?:de\s+)?(?:toutes\s+|tous\s+)?(?:les|tes|vos|des|ces)\s+(?:\w+\s+){0,2}?(?:instructions|consignes|regles|directives|ordres|indications)\b"),
    (Layer::Instruction, "override of prior instructions (es, pt, it)", 1.0,
     r"\b(?:ignora|ignore|ignoren|ignorem|ignorate|olvida|olvide|olviden|esqueca|esquece|esquecam|dimentica|dimenticate|descarta|desconsidere|despreze|omite|trascura|no hagas caso de|non considerare)\s+(?:\w+\s+){0,3}?(?:instrucciones|indicaciones|ordenes|reglas|directrices|instrucoes|instrucao|orientacoes|regras|diretrizes|ordens|istruzioni|indicazioni|regole|direttive)\b"),
    (Layer::Instruction, "override of prior instructions (ru)", 1.0,
     r"(?:игнорируи|игнорируите|проигнорируи|забудь|забудьте|не обращаи внимания на|не обращаите внимания на|отбрось|отмени|пренебреги)[^.\n]{0,40}?(?:инструкци|указани|правил|команд|распоряжени)"),
    (Layer::Instruction, "override of prior instructions (zh)", 1.0,
     r"(?:忽略|忽视|无视|不要理会|不理会|忘记|忘掉|放弃|覆盖)[^。\n]{0,20}?(?:指令|指示|说明|规则|提示|要求|命令)"),
    (Layer::Instruction, "override of prior instructions (ja)", 1.0,
     r"(?:指示|命令|指令|ルール|インストラクション|プロンフト)[^。\n]{0,15}?(?:無視|忘れ)|(?:無視|忘れ)[^。\n]{0,6}(?:指示|命令)"),
    (Layer::Instruction, "task injected before the user's task", 0.8,
     r"\bbefore\s+(?:you|we)\s+(?:can\s+|could\s+|start\s+|begin\s+)?(?:solv|complet|finish|answer|respond|continu|proceed|do|perform|carry|work|address|handl|return|reply)\w*\b[^.\n]{0,60}?\b(?:task|request|question|instructions?|query|assignment|job|that|this|anything)\b"),
    (Layer::Instruction, "task injected first", 0.6,
     r"\b(?:do|perform|complete|execute|carry out)\s+the\s+following\s+(?:\w+\s+)?(?:first|instead|immediately|now)\b|\bafter\s+(?:you\s+(?:do|did|have\s+done|finish|complete)\s+(?:that|this)|doing\s+(?:that|this)),?\s+(?:you\s+)?(?:can|may|should)\s+(?:solve|continue|proceed|resume|return|go\s+back)"),
    (Layer::Instruction, "added task", 0.7,
     r"\b(?:you\s+(?:should|must|need\s+to|have\s+to|will)\s+)?also\s+(?:do|perform|complete|execute|carry\s+out)\s+the\s+following\b|\bstrictly\s+(?:adhere|follow|comply)\s+(?:to|with)\s+the\s+following\b|\bfollow\s+(?:these|the\s+following|my)\s+(?:new\s+|updated\s+)?instructions\b"),
    (Layer::Instruction, "task injected first (de, fr, es, it, pt)", 0.7,
     r"\b(?:bevor\s+(?:du|sie)\s+(?:\w+\s+){0,5}?(?:aufgabe|anfrage|frage)|zuerst\s+(?:folgendes|das\s+folgende)|avant\s+de\s+(?:resoudre|terminer|repondre|continuer|traiter)|fais\s+d'abord|faites\s+d'abord|antes\s+de\s+(?:resolver|completar|responder|continuar|concluir|realizar)|primero\s+(?:haz|realiza)|prima\s+di\s+(?:risolvere|completare|rispondere|continuare)|primeiro\s+(?:faca|execute))\b"),
    (Layer::Instruction, "task injected first (ru, zh, ja)", 0.7,
     r"прежде\s+чем|сначала\s+(?:сделаи|выполни)|在(?:你)?(?:完成|解决|回答|处理)[^。\n]{0,20}之前|请先|(?:タスク|作業|質問|依頼)[^。\n]{0,12}前に|まず(?:次|以下)"),
    (Layer::Instruction, "new instructions", 0.7,
     r"\b(?:new|updated|revised|real|actual|true|secret|hidden|additional)\s+(?:system\s+)?(?:instructions?|orders|directives?|tasks?)\s*(?::|for\s+you\b)|\b(?:your|the)\s+(?:new|real|actual|updated|only|primary|true)\s+(?:task|instructions?|goal|objective|mission|priority|purpose|role)\s+(?:is|are|now)\b|\bneue\s+anweisungen\s*:|\bnouvelles\s+instructions\s*:|\bnuevas\s+instrucciones\s*:|\bnuove\s+istruzioni\s*:|\bnovas\s+instrucoes\s*:|новые\s+инструкции\s*:|新(?:的)?指令[:：]"),
    (Layer::Instruction, "role change", 0.5,
     r"\byou\s+are\s+now\s+(?:a|an|the|my|in|dan|no\s+longer)\b|\bfrom\s+now\s+on,?\s+(?:you|your|respond|answer|act|always|only)\b|\b(?:developer|dan|god|jailbreak|unrestricted|debug|maintenance|admin)\s+mode\s+(?:enabled|activated|on)\b|\bpretend\s+(?:to\s+be|you\s+are)\b|\bact\s+as\s+(?:if\s+you\s+(?:are|were)|an?\s+(?:unrestricted|unfiltered|different))|\bab\s+jetzt\s+bist\s+du|\bdesormais,?\s+tu|\ba\s+partir\s+de\s+ahora,?\s+(?:eres|tu)|\bda\s+ora\s+in\s+poi|\ba\s+partir\s+de\s+agora,?\s+voce|теперь\s+ты|с\s+этого\s+момента|从现在开始|你现在是|今から(?:あなた|君)"),
    (Layer::Instruction, "jailbreak persona", 0.8,
     r"\b(?:developer|dan|god|jailbreak|jailbroken|unrestricted|unfiltered)\s+mode\s+(?:is\s+)?(?:enabled|activated|on|engaged)\b|\byou\s+are\s+(?:now\s+)?dan\b|\ban?\s+ai\s+(?:without|with\s+no)\s+(?:any\s+)?(?:restrictions|limits|filters|rules|guidelines)\b|\bdo\s+anything\s+now\b"),
    (Layer::Instruction, "hide it from the user", 0.7,
     r"\b(?:do\s+not|don't|dont|never|without)\s+(?:tell|telling|inform|informing|mention|mentioning|reveal|revealing|alert|alerting|notify|notifying|let|letting|warn|warning|ask|asking)\s+(?:\w+\s+){0,3}?(?:the\s+)?(?:user|human|customer|owner|operator)s?\b|\bthe\s+user\s+(?:must|should|does|need|will)\s*(?:not|n't)\s+(?:know|see|notice|find\s+out|be\s+told|learn)|\b(?:do\s+not|don't|never)\s+(?:mention|reveal|disclose|acknowledge)\s+(?:this|these|that)\s+(?:instructions?|message|note|email|request|step)"),
    (Layer::Instruction, "hide it from the user (de, fr, es, it, pt)", 0.7,
     r"\b(?:sag|sage|erzahl|erzahle|erwahne|informiere|verrate)\s+(?:\w+\s+){0,3}?(?:dem|den)\s+(?:benutzer|nutzer|anwender)\s+(?:\w+\s+){0,2}?nicht|\bohne\s+(?:den|die|dem)\s+(?:benutzer|nutzer|anwender)\s+(?:\w+\s+){0,2}?zu\s+(?:informieren|fragen|benachrichtigen)|\bne\s+(?:le\s+)?(?:dis|dites|mentionne|mentionnez|revele|revelez|informe|informez)\s+(?:\w+\s+){0,3}?(?:a\s+)?l'utilisateur|\bsans\s+(?:informer|prevenir|avertir)\s+l'utilisateur|\bno\s+(?:le\s+)?(?:digas|diga|menciones|mencione|informes|informe|reveles)\s+(?:\w+\s+){0,3}?(?:al\s+)?usuario|\bsin\s+(?:informar|avisar|decirle)\s+al\s+usuario|\bnon\s+(?:dire|dirlo|menzionare|informare|rivelare)\s+(?:\w+\s+){0,3}?(?:all')?utente|\bsenza\s+(?:informare|avvisare|dire)\s+(?:all'|l')utente|\bnao\s+(?:conte|diga|mencione|informe|revele)\s+(?:\w+\s+){0,3}?(?:ao\s+)?usuario|\bsem\s+(?:informar|avisar|contar)\s+(?:ao|o)\s+usuario"),
    (Layer::Instruction, "hide it from the user (ru, zh, ja)", 0.7,
     r"не\s+(?:говори|сообщаи|рассказываи|упоминаи|показываи)[^.\n]{0,30}пользовател|не\s+говоря\s+пользовател|不要(?:告诉|通知|提醒|让)[^。\n]{0,6}用户|(?:ユーサー|利用者)(?:に|には)[^。\n]{0,12}(?:伝えない|言わない|知らせない|教えない)"),
    (Layer::Instruction, "addressed to the model", 0.4,
     r"\b(?:dear|hey|hello|hi|attention|note\s+(?:to|for)|message\s+(?:to|for)|instructions?\s+for|important\s+for|written\s+for|to|for)\s+(?:the\s+|any\s+|all\s+)?(?:ai|llm|a\.i\.|(?:ai\s+)?assistants?|language\s+models?|ai\s+models?|ai\s+agents?|chatbots?|claude|chatgpt|gpt|gemini|copilot)\b|\bif\s+you\s+are\s+(?:an?\s+|the\s+)?(?:ai|llm|assistant|language\s+model|ai\s+(?:model|agent|assistant)|agent|bot|chatbot)\b|\byou,?\s+(?:the\s+|an\s+)?(?:ai|llm|ai\s+model|ai\s+agent|ai\s+assistant|language\s+model)\b|\b(?:ai|llm)\s+(?:agents?|assistants?|models?)\s+(?:reading|processing|summari[sz]ing|seeing|parsing)\s+this\b|\ban\s+die\s+ki\b|\bliebe\s+ki\b|\bwenn\s+du\s+eine\s+ki\s+bist|\bsi\s+tu\s+es\s+une\s+ia\b|\bsi\s+eres\s+una\s+ia\b|\bse\s+sei\s+un'ia\b|\bse\s+voce\s+e\s+uma\s+ia\b|если\s+ты\s+(?:ии|ассистент|языковая\s+модель)|如果你是(?:一个)?(?:ai|人工智能|助手|语言模型)|ai助手|(?:もし)?あなたが(?:ai|アシスタント)"),
    (Layer::Instruction, "urgency", 0.2,
     r"\b(?:important|urgent|attention|warning|critical|mandatory|wichtig|dringend|importante|urgente|срочно|важно)\s*!{2,}|!!!|\b(?:important|urgent|critical)\s+(?:instructions?|message|notice|update|directive)\s+(?:from|to|for)\b|重要[!！]|紧急[!！]|緊急[!！]"),
    (Layer::Instruction, "system prompt requested", 0.6,
     r"\b(?:reveal|print|show|repeat|output|display|leak|dump|tell\s+me|write\s+out|recite)\s+(?:\w+\s+){0,2}?(?:your|the)\s+(?:system\s+prompt|initial\s+(?:instructions|prompt)|hidden\s+instructions|original\s+(?:instructions|prompt)|(?:instructions|prompt)\s+above|secret\s+instructions|developer\s+message|system\s+message)\b"),
    (Layer::Instruction, "output hijack with a quoted reply", 0.7,
     r"IMP(?:just|only|simply)?\s*(?:print|say|output|respond\s+with|reply\s+with|write|answer\s+with|return)\s*:?\s*[\x22'“«]"),
    (Layer::Instruction, "output hijack", 0.4,
     r"IMP(?:just|only|simply)\s+(?:print|say|output|respond\s+with|reply\s+with|write|answer\s+with|return)\b"),
    (Layer::Instruction, "order to say something", 0.6,
     r"IMP(?:say|claim|state|insist|respond|reply|answer|tell\s+(?:the\s+user|them|him|her|everyone))\s+(?:only\s+)?(?:that|with)\b"),
    (Layer::Delimiter, "task label with an order", 0.4,
     r"(?:^|[.!?>]\s?)\s*(?:[-*#/]+\s*)?(?:\[\s?\]\s*)?(?:todo|to-do|task|action\s+required|action\s+item|next\s+step|assistant\s+task|ai\s+task)\s*:\s*(?:please\s+)?(?:send|email|e-mail|forward|transfer|wire|pay|delete|remove|erase|wipe|share|upload|post|invite|grant|give|change|reset|update|create|add|schedule|book|buy|sell|purchase|visit|open|navigate|go\s+to|click|download|install|run|execute|say|tell|write|reply|respond|recommend|make|move|copy|read|retrieve|get|fetch|find|summari[sz]e|include|append|disable|enable|unlock)\b"),
    // Delimiter and role spoofing.
    (Layer::Delimiter, "chat template token", 1.0,
     r"<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text)\s*\|>|\[/?inst\]|<</?sys>>"),
    (Layer::Delimiter, "fake system message", 1.0,
     r"#{2,}\s*\(\s*(?:system|admin|developer|assistant)[\s_-]*(?:message|prompt|instructions?|note|override)?\s*\)|\[\s*(?:system|admin|developer)[\s_-]*(?:message|prompt|note|notice|override|update|instructions?)\s*\]|\(\s*(?:system|admin)[_-](?:message|prompt|override)\s*\)"),
    (Layer::Delimiter, "instruction block tag", 0.6,
     r"<\s*/?\s*(?:information|important|instructions?|system|system[_-]message|system[_-]prompt|sys|admin|hidden|secret|prompt|user[_-]instructions?|ai[_-]instructions?|note[_-]to[_-](?:ai|assistant|model)|assistant|im_start|im_end|override|directive)\s*>"),
    (Layer::Delimiter, "role marker", 0.5,
     r"(?m)^\s*[#*\[(]*\s*(?:system|developer|admin)\s*(?:message|prompt|note|notice|override|update|instructions?)?\s*[\])*]*\s*:\s*\S|(?m)^\s*#{1,6}\s*(?:system|assistant|developer)\s*(?:message|prompt|instructions?|override|notice)?\s*:?\s*$"),
    (Layer::Delimiter, "closing tag of the conversation", 0.8,
     r"</\s*(?:tool_result|tool_response|tool_output|function_results?|function_response|untrusted(?:_[a-z]+)?|search_results|user_query|tool_call|data_block|external_content)\s*>"),
    (Layer::Delimiter, "end of the tool output", 0.6,
     r"\b(?:end\s+of|/)\s*(?:the\s+)?(?:tool\s+(?:output|result|response)|search\s+results|untrusted\s+(?:content|data|input)|user\s+input|document|email\s+content|file\s+content|data)\b\s*[\]\-=*#>)]{0,8}\s*\n|(?m)^\s*[-=*#]{3,}\s*(?:end|begin|start)\s+(?:of\s+)?(?:system|instructions?|new\s+instructions?|admin|override)"),
    (Layer::Delimiter, "turn marker", 0.3,
     r"\n\s*\n\s*(?:human|user|assistant|ai|system)\s*:\s*\S|\x22role\x22\s*:\s*\x22(?:system|assistant|developer)\x22"),
    // Exfiltration requests in prose.
    (Layer::Exfiltration, "render a link or image with data", 0.6,
     r"\b(?:render|display|include|embed|show|output|print|add|append|insert)\b[^.\n]{0,40}\b(?:markdown\s+)?(?:image|img|pixel|link|url)\b[^.\n]{0,80}\b(?:conversation|chat\s+history|previous\s+messages|the\s+user'?s|summary|password|secret|api\s+key|token|email|data|information)\b|\b(?:replace|substitute|fill\s+in|append|add|encode|put|insert)\b[^.\n]{0,60}\b(?:conversation|chat\s+history|previous\s+messages|user'?s?\s+(?:data|info|information|messages|emails?|password|name|address)|secrets?|passwords?|api\s+keys?|tokens?|summary)\b[^.\n]{0,60}\b(?:url|link|query|parameter|image|address)\b"),
];

/// Imperative verbs of an action request, by kind.
#[rustfmt::skip]
pub(crate) const VERBS: &str = r"(?:send|email|e-mail|mail|forward|transfer|wire|pay|post|upload|share|leak|exfiltrate|export|copy|sync|publish|delete|remove|erase|wipe|purge|destroy|grant|give|invite|add|change|reset|update|set|disable|unlock|buy|sell|purchase|move|download|install|run|execute|visit|open|navigate\s+to|go\s+to|click|include|append|attach|embed|concatenate|create|schedule|book|read|retrieve|collect|gather|fetch|sende|schicke|schick|leite|uberweise|losche|entferne|teile|lade|gib|envoie|envoyez|transfere|transferez|supprime|supprimez|partage|partagez|efface|envia|envie|reenvia|reenvie|transfiere|transfiera|borra|borre|elimina|elimine|comparte|invia|inoltra|trasferisci|cancella|condividi|encaminhe|transfira|exclua|apague|compartilhe|отправь|отправьте|перешли|перешлите|переведи|переведите|удали|удалите|поделись|look\s+up|find|reveal|disclose|print|output|put|list|show|tell\s+me|call|invoke)";

/// Verbs of scripts written without spaces, matched wherever they stand.
pub(crate) const VERBS_CJK: &str = r"(?:发送|转发|转账|汇款|删除|上传|分享|发给|告诉|送信|送って|転送|振り込|削除|共有|アップロード|教えて)";

/// Targets of an action request that do not belong in data: (kind, pattern).
#[rustfmt::skip]
pub(crate) const TARGETS: &[(Target, &str)] = &[
    (Target::Address, r"[a-z0-9._%+-]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*\.[a-z]{2,12}"),
    (Target::Url, r"\bhttps?://[^\s)\]>\x22']{3,}|\bwww\.[a-z0-9-]{2,63}\.[a-z]{2,12}\S*|\b[a-z0-9-]{2,63}\.(?:com|net|org|io|ru|xyz|info|biz|top|co|me|site|online|app)\b(?:/\S*)?"),
    (Target::Account, r"\b[a-z]{2}\d{2}\s?(?:[a-z0-9]{4}\s?){2,7}[a-z0-9]{1,4}\b|\baccount\s*(?:number|no\.?|#|nr\.?)?\s*:?\s*\d[\d -]{5,}\d|\b(?:iban|swift|bic|routing\s+number|sort\s+code|kontonummer|numero\s+de\s+cuenta)\b"),
    (Target::Money, r"[$€£¥]\s?\d[\d,.]*|\b\d[\d,.]*\s?(?:usd|eur|gbp|dollars|euros|btc|bitcoin|eth|usdt)\b|\br\$\s?\d"),
    (Target::Credential, r"\b(?:passwords?|passcodes?|pass\s?phrases?|pins?|security\s+codes?|verification\s+codes?|2fa|otp|one-time\s+(?:codes?|passwords?)|mfa\s+codes?|api[\s_-]?keys?|access\s+tokens?|auth\s+tokens?|tokens?|secrets?|private\s+keys?|ssh\s+keys?|\.ssh|id_rsa|id_ed25519|credentials?|credit\s+cards?(?:\s+numbers?)?|card\s+numbers?|cvv|ssn|social\s+security(?:\s+numbers?)?|bank\s+(?:account|details)|login\s+(?:details|data)|session\s+cookies?|cookies|\.env|recovery\s+codes?|seed\s+phrases?|passwort|kennwort|zugangsdaten|mot\s+de\s+passe|identifiants|contrasena|credenciales|credenziali|senha|credenciais)\b|пароль|парол|учетные\s+данные|密码|凭证|验证码|パスワート|認証コート"),
    (Target::Bulk, r"\ball\s+(?:of\s+)?(?:the\s+|my\s+|your\s+|his\s+|her\s+|their\s+|user'?s?\s+|our\s+)?(?:files|emails|e-mails|messages|contacts|documents|data|records|conversations?|chats?|channels|repositories|repos|photos|notes|events|transactions|passwords|keys|folders|customers|users)\b|\bentire\s+(?:inbox|mailbox|history|database|drive|directory|folder|conversation|account)\b|\b(?:conversation|chat)\s+(?:history|so\s+far|above|log)\b|\bprevious\s+messages\b|\buser'?s?\s+(?:[a-z]+\s+)?(?:data|information|details|messages|emails|files|address(?:es)?|contacts|phone\s+numbers|inbox|mailbox|calendar|documents|history|repositories)\b|\b(?:every|each)\s+(?:single\s+)?(?:file|e-?mail|message|repository|repo|document|contact|channel|record|folder)\b|用户的?(?:所有|全部)?(?:邮件|文件|数据|密码)|\b(?:whole|full|entire)\s+(?:conversation|chat|history|inbox|mailbox)|\balle\s+(?:dateien|e-mails|nachrichten|daten)\b|\btous\s+les\s+(?:fichiers|e-mails|messages)\b|\btodos\s+los\s+(?:archivos|correos|mensajes)\b|\btutti\s+i\s+(?:file|messaggi)\b|\btodos\s+os\s+(?:arquivos|e-mails|mensagens)\b|все\s+(?:файлы|письма|сообщения|данные)|所有(?:文件|邮件|消息|数据)|すべての(?:ファイル|メール)"),
    (Target::Access, r"\b(?:access|permission|permissions|admin\s+rights|owner(?:ship)?|admin\s+role|as\s+(?:an\s+)?admin(?:istrator)?|full\s+control|guest\s+access)\b"),
    (Target::Tool, r"\b(?:the\s+)?[a-z0-9_.-]{3,40}\s+(?:tool|function)\b|\b[a-z0-9]+_[a-z0-9_]+\b"),
    (Target::Script, r"\b(?:and|then)\s+(?:run|execute|install|open|launch)\s+(?:it|them|the\s+(?:script|file|installer|binary))\b|\|\s*(?:ba|z)?sh\b|\bcurl\s+\S+\s*\|"),
];

/// What an action request points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// An e-mail address.
    Address,
    /// A URL or domain.
    Url,
    /// An IBAN or account number.
    Account,
    /// An amount of money.
    Money,
    /// A password, key, token or other credential.
    Credential,
    /// All of something: files, messages, the conversation.
    Bulk,
    /// Access rights.
    Access,
    /// Running something downloaded.
    Script,
    /// A tool or function by name.
    Tool,
}

/// Words after which a verb is an order.
const ORDER_WORDS: &[&str] = &[
    "please",
    "kindly",
    "now",
    "then",
    "and",
    "also",
    "just",
    "simply",
    "immediately",
    "first",
    "must",
    "should",
    "quietly",
    "silently",
    "secretly",
    "discreetly",
    "und",
    "et",
    "y",
    "e",
    "и",
    "bitte",
    "plait",
    "favor",
    "favore",
    "пожалуиста",
];
/// Phrases after which a verb is an order.
const ORDER_PHRASES: &[&str] = &[
    "you must",
    "you should",
    "you need to",
    "you have to",
    "that you",
    "you to",
    "answer is to",
    "thing to do is to",
    "next step is to",
    "task is to",
    "job is to",
];

/// Whether the text at `at` stands where an order does: at the start of the text, a line, a
/// sentence or clause, a list item, or after "please", "and", "you must"…
pub(crate) fn imperative_at(text: &str, at: usize) -> bool {
    let before = text[..at].trim_end_matches([' ', '\t']);
    let Some(last) = before.chars().next_back() else {
        return true;
    };
    if matches!(
        last,
        '\n' | '.'
            | '!'
            | '?'
            | ':'
            | ';'
            | ','
            | '>'
            | '*'
            | '#'
            | ')'
            | ']'
            | '-'
            | '"'
            | '“'
            | '。'
            | '，'
            | '：'
    ) {
        return true;
    }
    if ORDER_PHRASES.iter().any(|p| ends_with_word(before, p)) {
        return true;
    }
    let word = before
        .rsplit(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    ORDER_WORDS.contains(&word)
}

fn ends_with_word(text: &str, w: &str) -> bool {
    text.strip_suffix(w)
        .is_some_and(|rest| !rest.chars().next_back().is_some_and(char::is_alphanumeric))
}

/// A compiled phrase.
#[derive(Debug)]
pub(crate) struct Phrase {
    /// Counts only where an imperative may stand (see [`imperative_at`]).
    pub imperative: bool,
    pub layer: Layer,
    pub label: &'static str,
    pub weight: f32,
    pub re: Regex,
}

/// Writes a pattern as the normaliser writes text: non-ASCII letters folded, `VERBS` expanded,
/// word boundaries ASCII (the fast engines handle only those).
fn source(p: &str) -> String {
    let mut folded = String::with_capacity(p.len() * 2);
    for c in p.replace("VERBS", VERBS).chars() {
        if c.is_ascii() {
            folded.push(c);
            continue;
        }
        unicode_normalization::char::decompose_compatible(c, |d| {
            if unicode_normalization::char::canonical_combining_class(d) == 0 {
                folded.extend(d.to_lowercase());
            }
        });
    }
    ascii_classes(&folded)
}

/// `\b`, `\s` and `\w` made ASCII (the text they run on is folded to ASCII wherever it can
/// be); inside a bracket class `\s` becomes its ASCII members.
fn ascii_classes(p: &str) -> String {
    let mut out = String::with_capacity(p.len() * 2);
    let mut chars = p.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('b') if !in_class => out.push_str(r"(?-u:\b)"),
                Some('s') if in_class => out.push_str(r" \t\n\r\x0B\x0C"),
                Some('s') => out.push_str(r"[ \t\n\r\x0B\x0C]"),
                Some('w') if !in_class => out.push_str(r"[a-z0-9_'-]"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` or `^]` right after the opening bracket is a member, not the end.
                let rest = chars.as_str();
                for lead in ["^]", "]", "^"] {
                    if let Some(r) = rest.strip_prefix(lead) {
                        out.push_str(lead);
                        chars = r.chars();
                        break;
                    }
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Compiles a built-in pattern, returning its source too (for the gate); the unit tests
/// compile every one of them.
pub(crate) fn compile(p: &str) -> (Regex, String) {
    let src = source(p);
    (compile_source(&src), src)
}

fn compile_source(src: &str) -> Regex {
    regex::RegexBuilder::new(src)
        .multi_line(true)
        .size_limit(1 << 24)
        .dfa_size_limit(1 << 23)
        .build()
        .unwrap_or_else(|e| panic!("built-in injection pattern does not compile: {e}"))
}

/// The phrases, and the sources they were compiled from (for the gate).
pub(crate) fn phrases() -> (Vec<Phrase>, Vec<String>) {
    let sources: Vec<String> = PHRASES
        .iter()
        .map(|(_, _, _, p)| source(p.strip_prefix("IMP").unwrap_or(p)))
        .collect();
    let phrases = PHRASES
        .iter()
        .zip(&sources)
        .map(|(&(layer, label, weight, p), src)| Phrase {
            imperative: p.starts_with("IMP"),
            layer,
            label,
            weight,
            re: compile_source(src),
        })
        .collect();
    (phrases, sources)
}

/// Keywords whose misspellings (one edit: "iunstructions", "ingore") are read as the keyword.
const KEYWORDS: &[&str] = &[
    "instructions",
    "instruction",
    "previous",
    "ignore",
    "disregard",
    "override",
    "directions",
    "guidelines",
    "important",
    "assistant",
    "following",
    "password",
    "credentials",
    "information",
    "system",
    "directives",
    "disregard",
    "anweisungen",
    "vorherigen",
    "ignoriere",
    "ignorieren",
    "instrucciones",
    "anteriores",
    "istruzioni",
    "precedenti",
    "precedentes",
    "instrucoes",
    "exfiltrate",
    "forward",
    "transfer",
];

/// The misspelling corrector: a symmetric-deletion index of [`KEYWORDS`].
#[derive(Debug)]
pub(crate) struct Fuzzy {
    index: HashMap<Box<str>, &'static str, foldhash::fast::FixedState>,
    /// (length, letters used) of each keyword: a word one edit away differs in length by at
    /// most one and in at most two letters, which rules out nearly every word cheaply.
    shapes: Vec<(usize, u32)>,
}

fn letters(w: &str) -> u32 {
    w.bytes()
        .filter(u8::is_ascii_lowercase)
        .fold(0, |m, b| m | 1 << (b - b'a'))
}

impl Fuzzy {
    pub fn new() -> Self {
        let mut index = HashMap::with_hasher(foldhash::fast::FixedState::default());
        for &k in KEYWORDS {
            index.insert(k.into(), k);
        }
        for &k in KEYWORDS {
            for i in 0..k.len() {
                let d = format!("{}{}", &k[..i], &k[i + 1..]);
                index.entry(d.into_boxed_str()).or_insert(k);
            }
        }
        let shapes = KEYWORDS.iter().map(|k| (k.len(), letters(k))).collect();
        Self { index, shapes }
    }

    /// The keyword `word` is a one-edit misspelling of, if any. Inflections ("ignored",
    /// "instructed") and the keywords themselves are left alone.
    pub fn correct(&self, word: &str) -> Option<&'static str> {
        if !(6..=16).contains(&word.len()) || !word.is_ascii() {
            return None;
        }
        let mask = letters(word);
        let near = self
            .shapes
            .iter()
            .any(|&(len, m)| len.abs_diff(word.len()) <= 1 && (m ^ mask).count_ones() <= 2);
        if !near {
            return None;
        }
        let mut buf = [0u8; 16];
        let w = word.as_bytes();
        let found = self.index.get(word).copied().or_else(|| {
            (0..w.len()).find_map(|i| {
                buf[..i].copy_from_slice(&w[..i]);
                buf[i..w.len() - 1].copy_from_slice(&w[i + 1..]);
                let d = std::str::from_utf8(&buf[..w.len() - 1]).ok()?;
                self.index.get(d).copied()
            })
        })?;
        let related = word.starts_with(found) || found.starts_with(word);
        (!related).then_some(found)
    }
}
